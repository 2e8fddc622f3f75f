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

from ..procfs import stat_fields

# Popen objects of the daemons this process started: kept so they are not collected while the
# daemon runs (and reaped by `reap`), since the lab outlives the call that started it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def reap() -> None:
    """Collect the exit status of daemons this process started that have ended."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


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
    start_time: int = 0  # /proc/<pid>/stat field 22: tells our process from a reused PID

    def alive(self) -> bool:
        """Running, and still the process we started (PIDs get reused)."""
        child = _CHILDREN.get(self.pid)
        if child is not None and child.poll() is not None:
            del _CHILDREN[self.pid]
            return False
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.start_time

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
    _CHILDREN[proc.pid] = proc
    # nsenter and taskset exec the program, so the PID stays the program's
    stat = _stat(proc.pid)
    return Daemon(name, proc.pid, netns, str(log), (argv[0],), stat[1] if stat else 0)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process, or None if it is gone."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[19]))


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
        Daemon(d["name"], d["pid"], d["netns"], d["log"], tuple(d["argv"]), d.get("start_time", 0))
        for d in data.pop("daemons", [])
    ]
    return daemons, data
