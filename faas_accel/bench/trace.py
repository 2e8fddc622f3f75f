"""Invocation traces in the Azure Functions 2019 CSV shape.

One row per function: hash columns (`HashOwner`, `HashApp`, `HashFunction`, in any order,
maybe a `Trigger`) then one column per minute (`minute_1..minute_1440` in the vHive sample,
`1..1440` in the public dataset) holding that minute's invocation count. Only the minutes
with invocations are kept.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_MINUTE = re.compile(r"(?:minute_)?(\d+)")


class TraceError(ValueError):
    """The trace is missing, ambiguous or malformed (the message names file and line)."""


@dataclass(frozen=True)
class Trace:
    """Which minutes (0-based) each function was invoked in, over `minutes` minutes."""

    source: str
    functions: tuple[str, ...]
    active: tuple[tuple[int, ...], ...]  # per function, minutes with at least one invocation
    minutes: int
    invocations: int


def find_trace(path: Path) -> Path:
    """The CSV file `path` names: itself, or the one `*inv*.csv` (else the one `*.csv`) in it."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise TraceError(f"{path}: no such file or directory")
    for pattern in ("*inv*.csv", "*.csv"):
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(p.name for p in found)
            raise TraceError(f"{path}: several traces ({names}); name one file")
    raise TraceError(f"{path}: no *.csv trace in it")


def load_trace(path: Path) -> Trace:
    """Read a per-minute invocation trace (a file, or a directory holding one)."""
    file = find_trace(path)
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            return _parse(csv.reader(fh), str(file))
    except OSError as exc:
        raise TraceError(f"{file}: cannot read: {exc.strerror}") from exc


def _parse(rows: Iterable[list[str]], source: str) -> Trace:
    reader = iter(rows)
    header = next(reader, None)
    if not header:
        raise TraceError(f"{source}: empty file")
    minute_cols = [(i, int(m.group(1))) for i, h in enumerate(header) if (m := _MINUTE.fullmatch(h.strip()))]
    if not minute_cols:
        raise TraceError(f"{source}:1: no minute columns (minute_1.. or 1..)")
    name_col = header.index("HashFunction") if "HashFunction" in header else 0
    app_col = header.index("HashApp") if "HashApp" in header else None
    first = min(m for _, m in minute_cols)
    minutes = max(m for _, m in minute_cols) - first + 1
    names: list[str] = []
    seen: set[str] = set()
    active: list[tuple[int, ...]] = []
    total = 0
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        name = row[name_col]
        if name in seen and app_col is not None:
            name = f"{row[app_col]}/{name}"
        while name in seen:
            name += "+"
        used = []
        for col, minute in minute_cols:
            cell = row[col].strip() if col < len(row) else ""
            try:
                n = int(float(cell)) if cell else 0
            except ValueError:
                raise TraceError(f"{source}:{line}: {header[col]}: not a count: {cell!r}") from None
            if n < 0:
                raise TraceError(f"{source}:{line}: {header[col]}: negative count {n}")
            if n:
                used.append(minute - first)
                total += n
        seen.add(name)
        names.append(name)
        active.append(tuple(sorted(used)))
    if not names:
        raise TraceError(f"{source}: no functions")
    return Trace(source, tuple(names), tuple(active), minutes, total)
