"""Reading /proc/<pid>/stat: one parser for every place that asks whether a process lives
or how much CPU it has used."""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name — [0] is the state (field 3),
    [1] the parent PID, [19] the start time — or None if the process is gone. The command
    name is cut at its last ") ", so a name holding spaces or parentheses cannot shift them."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a zombie has ended; only its exit status is left)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pid: int, *, reaped: bool = False) -> float | None:
    """User + system CPU seconds `pid` has used (fields 14-15), with `reaped` also those of its
    children it has waited for (fields 16-17); None if the process is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
    return ticks / os.sysconf("SC_CLK_TCK")
