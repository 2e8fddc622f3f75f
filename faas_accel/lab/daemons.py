"""Long-lived lab processes: started detached in a namespace, recorded by PID, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


class DaemonFailed(RuntimeError):
    """A lab process exited or never became ready; the message quotes its log."""


@dataclass(frozen=True)
class Daemon:
    """A started process: what it is, its PID and log."""

    name: str
    pid: int
    netns: str | None
    log: str
    argv: tuple[str, ...]

    def alive(self) -> bool:
        """Running, and still the process we started (PIDs get reused)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{self.pid}/stat").read_text().split(") ", 1)[1][0]
        except (FileNotFoundError, IndexError, ProcessLookupError):
            return False
        return state != "Z" and bool(cmdline) and cmdline[0].decode(errors="replace") == self.argv[0]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, then SIGKILL — only if it is still our process."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.05)


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    netns: str | None = None,
    env: dict[str, str] | None = None,
    cpus: str | None = None,
) -> Daemon:
    """Start `argv` detached (own session), in `netns` if given, logging to `log`."""
    full = list(argv)
    if cpus is not None:
        full = ["taskset", "-c", cpus, *full]
    if netns is not None:
        full = ["nsenter", f"--net=/run/netns/{netns}", *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    # nsenter and taskset exec the program, so the PID stays the program's
    return Daemon(name, proc.pid, netns, str(log), (argv[0],))


def wait_ready(daemon: Daemon, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `ready` until true; fail fast with the log if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not daemon.alive():
            raise DaemonFailed(f"{daemon.name} exited before {what}; its log:\n{daemon.tail()}")
        time.sleep(0.1)
    raise DaemonFailed(f"{daemon.name} not ready ({what}) after {timeout:.0f} s; its log:\n{daemon.tail()}")


def save(path: Path, daemons: Sequence[Daemon], extra: dict[str, object]) -> None:
    """Record the lab's processes and facts (written atomically)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**extra, "daemons": [asdict(d) for d in daemons]}, indent=2))
    os.replace(tmp, path)


def load(path: Path) -> tuple[list[Daemon], dict[str, object]]:
    """The recorded processes and facts, or nothing if no lab state is there."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return [], {}
    daemons = [
        Daemon(d["name"], d["pid"], d["netns"], d["log"], tuple(d["argv"])) for d in data.pop("daemons", [])
    ]
    return daemons, data
