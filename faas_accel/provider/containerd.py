"""`Runtime` over containerd 1.6, driving `ctr --address SOCK --namespace NS` by subprocess.

Containers run with `ctr run -d --net-host`, so a function listens on the VM's network at
the port the provider gave it. Output goes through `logdriver` (a containerd logging
binary, `--log-uri binary://...`), the same mechanism `faasd collect` uses, because
`ctr run -d` without a log URI leaves the task writing to FIFOs nobody reads. `ctr` runs
in the provider's own network namespace, which matters for `images pull`: ctr fetches in
the client process, not in the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

from ..procfs import running
from . import logdriver
from .errors import PullFailed, RuntimeFailed
from .logs import LogFollower
from .phases import Mark, no_mark
from .runtime import SECRETS_MOUNT, ContainerSpec, LogLine, TaskStatus

log = logging.getLogger("faas_accel.provider.containerd")
EXIT_CODE_RE = re.compile(r"exit with non-zero exit code (\d+)")
NOT_FOUND_RE = re.compile(r"not found|no such", re.IGNORECASE)
RESOLVED_RE = re.compile(r"\bmsg=resolved\b")  # ctr --debug: the resolver found the manifest
UNPACKING_RE = re.compile(r"^(?:\x1b\[[0-9;]*[A-Za-z])*unpacking ")  # after ctr's redraw escapes
_STATUS = {s.name: s for s in TaskStatus}


def ctr_reason(result: subprocess.CompletedProcess[str]) -> str:
    """What ctr said went wrong: its `ctr: ...` line, else the last line of stderr."""
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("ctr: "):
            return line.removeprefix("ctr: ")
    return lines[-1] if lines else f"ctr exited with status {result.returncode}"


def parse_tasks(output: str) -> dict[str, tuple[int, TaskStatus]]:
    """`ctr tasks ls` output -> {id: (pid, status)}."""
    tasks = {}
    for line in output.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            pid = int(fields[1]) if fields[1].isdigit() else 0
            tasks[fields[0]] = (pid, _STATUS.get(fields[2].upper(), TaskStatus.UNKNOWN))
    return tasks


class ContainerdRuntime:
    """Functions as containerd containers in one namespace of one containerd."""

    name = "containerd"

    def __init__(
        self,
        address: str,
        namespace: str,
        *,
        state_dir: Path,
        hosts_dir: Path | None = None,
        ctr: str = "ctr",
        pull_timeout: float = 600.0,
        stop_grace: float = 2.0,
        python: str = sys.executable,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.hosts_dir = hosts_dir
        self.ctr_path = ctr
        self.pull_timeout = pull_timeout
        self.stop_grace = stop_grace
        self.log_dir = state_dir / "logs"
        self.pid_dir = state_dir / "pids"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        query = urllib.parse.urlencode({str(Path(logdriver.__file__).resolve()): str(self.log_dir.resolve())})
        self.log_uri = f"binary://{python}?{query}"

    def ctr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `ctr --address A --namespace N ARGS`; RuntimeFailed if it cannot run at all."""
        argv = [self.ctr_path, "--address", self.address, "--namespace", self.namespace, *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeFailed(f"ctr {' '.join(args[:2])} timed out after {timeout:.0f}s") from exc
        except OSError as exc:
            raise RuntimeFailed(f"cannot run {self.ctr_path}: {exc}") from exc

    def pull(self, image: str, *, plain_http: bool, mark: Mark = no_mark) -> None:
        """`ctr --debug images pull`, read as it runs: the resolver's `msg=resolved` log line
        ends the resolve phase, the `unpacking` line ends the fetch, the exit ends the unpack.
        (Without a terminal ctr prints its progress only once, after the fetch.)"""
        args = ["--debug", "images", "pull"]
        if plain_http:
            args.append("--plain-http")
        if self.hosts_dir is not None:
            args += ["--hosts-dir", str(self.hosts_dir)]
        seen: set[str] = set()

        def progress(line: str) -> None:
            if "resolve" not in seen and RESOLVED_RE.search(line):
                seen.add("resolve")
                mark("resolve")
            elif "fetch" not in seen and UNPACKING_RE.match(line):
                seen.update(("resolve", "fetch"))
                mark("fetch")

        try:
            result = self._ctr_streaming([*args, image], progress, timeout=self.pull_timeout)
        except RuntimeFailed as exc:
            raise PullFailed(f"pull of {image} failed: {exc}") from exc
        if result.returncode != 0:
            raise PullFailed(f"pull of {image} failed: {ctr_reason(result)}")

    def _ctr_streaming(
        self, args: Sequence[str], on_line: Callable[[str], None], *, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """`ctr ARGS`, handing each output line (stdout and stderr) to `on_line` as it arrives;
        killed at `timeout`. The result's stderr holds the lines that are not debug logs."""
        argv = [self.ctr_path, "--address", self.address, "--namespace", self.namespace, *args]
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            raise RuntimeFailed(f"cannot run {self.ctr_path}: {exc}") from exc
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            proc.kill()

        killer = threading.Timer(timeout, kill)
        killer.start()
        said: list[str] = []
        try:
            assert proc.stdout is not None
            with proc.stdout:
                for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace")
                    on_line(line)
                    if not line.startswith("time="):
                        said.append(line)
            code = proc.wait()
        finally:
            killer.cancel()
        if expired.is_set():
            what = " ".join([a for a in args if not a.startswith("-")][:2])
            raise RuntimeFailed(f"ctr {what} timed out after {timeout:.0f}s")
        return subprocess.CompletedProcess(argv, code, "", "".join(said))

    def create(self, spec: ContainerSpec) -> None:
        args = ["run", "-d", "--net-host", *self._io_args(spec.id)]
        for key, value in spec.env.items():
            args += ["--env", f"{key}={value}"]
        for key, value in spec.labels.items():
            args += ["--label", f"{key}={value}"]
        if spec.memory_limit:
            args += ["--memory-limit", str(spec.memory_limit)]
        if spec.cpus:
            args += ["--cpus", str(spec.cpus)]
        if spec.read_only:
            args += ["--read-only", "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev"]
        for secret, path in spec.secrets.items():
            args += ["--mount", f"type=bind,src={path},dst={SECRETS_MOUNT}/{secret},options=rbind:ro"]
        self._check(self.ctr(*args, spec.image, spec.id), f"ctr run {spec.id}")

    def start(self, cid: str) -> None:
        self._check(self.ctr("tasks", "start", "-d", *self._io_args(cid), cid), f"ctr tasks start {cid}")

    def stop(self, cid: str) -> int | None:
        tasks = parse_tasks(self.ctr("tasks", "ls").stdout)
        if cid not in tasks:
            return None
        pid, status = tasks[cid]
        if status is TaskStatus.RUNNING and self.stop_grace > 0:
            self.ctr("tasks", "kill", "--signal", "SIGTERM", cid)
            deadline = time.monotonic() + self.stop_grace
            while running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        # --force SIGKILLs a task that is still running, then deletes it
        result = self.ctr("tasks", "delete", "--force", cid)
        if result.returncode != 0 and not NOT_FOUND_RE.search(result.stderr):
            raise RuntimeFailed(f"ctr tasks delete {cid}: {ctr_reason(result)}")
        with contextlib.suppress(FileNotFoundError):
            self._pid_file(cid).unlink()
        match = EXIT_CODE_RE.search(result.stderr)
        return int(match[1]) if match else 0

    def remove(self, cid: str, *, keep_logs: bool = False) -> int | None:
        code = self.stop(cid)
        result = self.ctr("containers", "delete", cid)
        if result.returncode != 0 and not NOT_FOUND_RE.search(result.stderr):
            raise RuntimeFailed(f"ctr containers delete {cid}: {ctr_reason(result)}")
        if not keep_logs:
            for path in (self._log_file(cid), self._log_file(cid).with_suffix(".log.1")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return code

    def status(self, cid: str) -> TaskStatus:
        return self.statuses().get(cid, TaskStatus.MISSING)

    def statuses(self) -> dict[str, TaskStatus]:
        containers = self.ctr("containers", "ls", "-q")
        tasks = self.ctr("tasks", "ls")
        for result in (containers, tasks):
            if result.returncode != 0:
                raise RuntimeFailed(f"ctr: {ctr_reason(result)}")
        running = parse_tasks(tasks.stdout)
        return {
            cid: running[cid][1] if cid in running else TaskStatus.CREATED
            for cid in containers.stdout.split()
        }

    def alive(self, cid: str) -> bool:
        try:
            pid = int(self._pid_file(cid).read_text().strip())
        except (OSError, ValueError):
            return self.status(cid) is TaskStatus.RUNNING
        return running(pid)

    def logs(
        self, cid: str, *, since: datetime | None, tail: int | None, follow: bool
    ) -> Iterator[LogLine | None]:
        return LogFollower(self._log_file(cid), cid).lines(since=since, tail=tail, follow=follow)

    def _io_args(self, cid: str) -> Sequence[str]:
        pid_file = self._pid_file(cid)
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        return ["--log-uri", self.log_uri, "--pid-file", str(pid_file)]

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise RuntimeFailed(f"{what} failed: {ctr_reason(result)}")

    def _pid_file(self, cid: str) -> Path:
        return self.pid_dir / f"{cid}.pid"

    def _log_file(self, cid: str) -> Path:
        return self.log_dir / f"{cid}.log"

    def __repr__(self) -> str:
        return f"<ContainerdRuntime {self.address} ns={self.namespace}>"
