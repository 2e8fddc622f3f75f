"""Start, watch and stop helper processes.

Every process runs in its own session with stdout and stderr sent to a log
file, so a failure can quote what the process said, and ``stop`` reaches only
the PID that was started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import requests

from faas_accel.procfs import running

T = TypeVar("T")

# Variables that would send a helper's loopback traffic to a proxy.
PROXY_VARS = (
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return this process's environment without proxy settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra or {})
    return env


def session() -> requests.Session:
    """Return a requests session that ignores proxy settings (loopback and lab addresses)."""
    http = requests.Session()
    http.trust_env = False
    return http


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Raises TimeoutError naming ``what`` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def http_answers(url: str) -> bool:
    """Return True if something at ``url`` answers HTTP, whatever the status."""
    # An empty ProxyHandler keeps urllib off any proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True
    except OSError:
        return False


def wait_http(url: str, timeout: float = 10.0) -> None:
    """Wait until ``url`` gives any HTTP answer."""
    wait_for(lambda: http_answers(url), timeout, f"an HTTP answer from {url}")


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file, or a note if it is unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class ProcessFailed(RuntimeError):
    """A helper process exited or never became ready; the message quotes its log."""


class Proc:
    """A subprocess in its own session whose output goes to ``log``.

    The log is opened for appending, so a process restarted with the same log
    keeps what the earlier run wrote.
    """

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = [os.fspath(a) for a in args]
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(env),
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def failure(self, why: str) -> ProcessFailed:
        """Build an error for ``why`` that quotes the tail of the log."""
        return ProcessFailed(
            f"{self.args[0]} (pid {self.pid}) {why}\n"
            f"command: {' '.join(self.args)}\n"
            f"--- last lines of {self.log} ---\n{tail(self.log)}"
        )

    def wait_until(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """Like ``wait_for``, but fail at once if the process exits, quoting its log."""

        def check() -> T:
            result = predicate()
            if not result and not self.running():
                raise self.failure(f"exited with status {self.popen.returncode} before {what}")
            return result

        try:
            return wait_for(check, timeout, what)
        except TimeoutError as exc:
            raise self.failure(f"did not get to {what} within {timeout:.1f}s") from exc

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the process (see ``stop``) and return its exit status."""
        return stop(self.popen, timeout)


def stop(proc: subprocess.Popen[bytes] | Proc, timeout: float = 10.0) -> int:
    """SIGTERM the process by PID, wait up to ``timeout``, then SIGKILL; reap it."""
    popen = proc.popen if isinstance(proc, Proc) else proc
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGTERM)
        try:
            return popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGKILL)
    return popen.wait()


def pid_alive(pid: int) -> bool:
    """Return True if a process with ``pid`` exists (zombies count as gone)."""
    return running(pid)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a process we started indirectly (not our child) by PID: TERM, wait, KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_for(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5, f"pid {pid} to die after SIGKILL")


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion, capturing text output.

    With ``check`` a non-zero exit raises CalledProcessError whose message
    includes stderr, so a failing assertion says why.
    """
    argv = [os.fspath(a) for a in args]
    result = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(env),
        check=False,
    )
    if check and result.returncode != 0:
        raise CommandFailed(result)
    return result


class CommandFailed(subprocess.CalledProcessError):
    """A command exited non-zero; ``str()`` shows its stdout and stderr."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(result.returncode, result.args, result.stdout, result.stderr)

    def __str__(self) -> str:
        return (
            f"{' '.join(self.cmd)} exited with {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )
