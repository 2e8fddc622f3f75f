"""Reading and following the log files `logdriver` writes (one JSON object per line).

History is `<id>.log.1` then `<id>.log`; following continues on the handle that read the
history, so no line is lost or repeated between the two, and moves to a new file when
the logger rotates (the path's inode changes). It ends when the file is unlinked (the
function was deleted).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from .runtime import LogLine

POLL = 0.1  # seconds between looks at a followed file
HEARTBEAT = 10.0  # seconds of silence after which a follower yields None


def parse_record(raw: bytes, instance: str) -> LogLine | None:
    """One logdriver record -> LogLine; None for a line that is not one."""
    try:
        doc = json.loads(raw)
        stamp = datetime.fromisoformat(doc["time"])
        return LogLine(
            stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC),
            str(doc["log"]),
            instance,
            str(doc.get("stream", "stdout")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def filter_lines(lines: Iterable[LogLine], since: datetime | None, tail: int | None) -> list[LogLine]:
    """The lines at or after `since`, then only the last `tail` of those (all if None)."""
    kept = (line for line in lines if since is None or line.time >= since)
    if tail is None:
        return list(kept)
    return list(deque(kept, maxlen=tail)) if tail > 0 else []


class LogFollower:
    """Reads one function's log file: history, then (optionally) what is appended."""

    def __init__(
        self, path: Path, instance: str, *, poll: float = POLL, heartbeat: float = HEARTBEAT
    ) -> None:
        self.path = path
        self.instance = instance
        self.poll = poll
        self.heartbeat = heartbeat
        self._file: IO[bytes] | None = None
        self._partial = b""

    def lines(
        self,
        *,
        since: datetime | None,
        tail: int | None,
        follow: bool,
        stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[LogLine | None]:
        """History filtered by `since`/`tail`, then new lines while following (None when idle)."""
        try:
            yield from filter_lines(self._history(), since, tail)
            if follow:
                yield from self._follow(since, stop)
        finally:
            self._close()

    def _history(self) -> Iterator[LogLine]:
        rotated = self.path.with_name(self.path.name + ".1")
        try:
            with open(rotated, "rb") as old:
                yield from self._parse(old.read().split(b"\n"))
        except FileNotFoundError:
            pass
        self._file = self._open()
        if self._file is not None:
            yield from self._drain()

    def _follow(self, since: datetime | None, stop: Callable[[], bool]) -> Iterator[LogLine | None]:
        quiet_since = time.monotonic()
        while not stop():
            if self._file is None:
                self._file = self._open()
            got = False
            if self._file is not None:
                for line in self._drain():
                    got = True
                    if since is None or line.time >= since:
                        yield line
                if self._rotated():
                    # the logger may have written a last line before it renamed the file
                    for line in self._drain():
                        if since is None or line.time >= since:
                            yield line
                    self._close()
                    continue
                if self._unlinked():
                    return
            if got:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.heartbeat:
                quiet_since = time.monotonic()
                yield None
            time.sleep(self.poll)

    def _open(self) -> IO[bytes] | None:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            return None

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial = b""

    def _drain(self) -> Iterator[LogLine]:
        assert self._file is not None
        data = self._file.read()
        if not data:
            return
        *complete, self._partial = (self._partial + data).split(b"\n")
        yield from self._parse(complete)

    def _parse(self, raws: Iterable[bytes]) -> Iterator[LogLine]:
        for raw in raws:
            if raw.strip():
                line = parse_record(raw, self.instance)
                if line is not None:
                    yield line

    def _rotated(self) -> bool:
        assert self._file is not None
        try:
            return os.stat(self.path).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def _unlinked(self) -> bool:
        assert self._file is not None
        return os.fstat(self._file.fileno()).st_nlink == 0 and not self.path.exists()
