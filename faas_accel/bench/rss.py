"""The NIC cache's memory while the bench runs: peak RSS of a process tree, from /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from faas_accel.procfs import stat_fields


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its descendants, sampled in the background."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.root = root_pid
        self.interval = interval
        self.peak_total = 0
        self.peak_hwm = 0
        self.seen: set[int] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        total = 0
        for pid in tree(self.root):
            status = memory(pid)
            total += status.get("VmRSS", 0)
            self.peak_hwm = max(self.peak_hwm, status.get("VmHWM", 0))
            if status:
                self.seen.add(pid)
        self.peak_total = max(self.peak_total, total)

    def stop(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join(5)
        self.sample()
        return {  # /proc reports KiB; the report's MB are 10^6 bytes like every other size
            "peak_total_rss_mb": self.peak_total * 1024 / 1e6,
            "peak_process_hwm_mb": self.peak_hwm * 1024 / 1e6,
            "processes": len(self.seen),
        }


def tree(root: int) -> list[int]:
    """`root` and every descendant (by /proc/<pid>/stat's parent field)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None:
            parents[int(entry)] = int(fields[1])
    out, frontier = [root], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        out += kids
        frontier = kids
    return out


def memory(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of a process in KiB ({} if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out
