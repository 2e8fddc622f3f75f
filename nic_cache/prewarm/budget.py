"""The budget background (prewarm) fills share inside the cache, across every worker.

- Concurrency: at most `concurrency` background blob fills at once. A slot is one of N
  files `tmp/prewarm-slot-<i>.lock` held with an exclusive flock (released by the kernel
  if the worker dies).
- Bandwidth: one token bucket for all background fills together, its state (tokens, time)
  in `tmp/prewarm-bucket.lock` under flock. Each chunk the copy loop reads takes its size in
  tokens, going into debt if need be, and the loop sleeps the debt off before reading on.
- Live first: a background fill that a client now waits on (`Fills.live_reader`) is not
  paced any more at all. While any client waits on any fill (`Fills.live_misses`), the
  other background fills pause, reading one chunk at most every KEEPALIVE seconds so the
  upstream does not hang up, and no new background fill starts.

Live misses never meet any of this: they lead or follow fills without a pacer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Callable, Iterator, Mapping

from ..fill import Fills, Pacer

DEFAULT_LIMITS = {"concurrency": 2, "bandwidth": 0}  # when no prewarm file says otherwise
POLL = 0.05  # seconds between looks at the live markers while waiting
KEEPALIVE = 5.0  # a paused background fill still reads a chunk this often
BURST = 0.1  # seconds of bandwidth a quiet bucket may hand out at once


class Budget:
    """Hands out background fill slots and the pacers that enforce the bandwidth."""

    def __init__(
        self,
        fills: Fills,
        limits: Callable[[], Mapping[str, int]] = lambda: DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.fills = fills
        self.limits = limits  # the default: {"concurrency": n, "bandwidth": bits/s}
        self.clock = clock
        self.sleep = sleep

    @contextlib.contextmanager
    def slot(self, limits: Mapping[str, int] | None = None) -> Iterator[Pacer]:
        """Wait for a free slot while no live miss is in flight; yield the fill's pacer.

        `limits` are the caller's (its prewarm file's); without them, the registered ones.
        """
        limits = limits or self.limits()
        fd = self._acquire(max(1, int(limits.get("concurrency", DEFAULT_LIMITS["concurrency"]))))
        try:
            rate = int(limits.get("bandwidth", 0)) / 8
            bucket = SharedBucket(os.path.join(self.fills.tmp, "prewarm-bucket.lock"), rate, self.clock)
            yield BackgroundPacer(self.fills, bucket if rate > 0 else None, self.clock, self.sleep)
        finally:
            os.close(fd)

    def _acquire(self, slots: int) -> int:
        while True:
            if not self.fills.live_misses():
                for i in range(slots):
                    fd = os.open(os.path.join(self.fills.tmp, f"prewarm-slot-{i}.lock"),
                                 os.O_RDWR | os.O_CREAT, 0o600)  # fmt: skip
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return fd
                    except BlockingIOError:
                        os.close(fd)
            self.sleep(POLL)


class BackgroundPacer:
    """Paces one background fill: the shared bucket, giving way to live readers (module doc)."""

    def __init__(
        self,
        fills: Fills,
        bucket: SharedBucket | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.fills = fills
        self.bucket = bucket
        self.clock = clock
        self.sleep = sleep
        self.live = False  # a client joined: from now on this fill runs free
        self._progress = clock()

    def pace(self, digest: str, nbytes: int) -> None:
        """Return once the fill of `digest`, which just read `nbytes`, may read on."""
        if self.live:
            return
        until = self.clock() + (self.bucket.take(nbytes) if self.bucket else 0.0)
        while True:
            if self.fills.live_reader(digest):
                self.live = True
                return
            now = self.clock()
            paused = now - self._progress < KEEPALIVE and self.fills.live_misses()
            if not paused and now >= until:
                break
            self.sleep(POLL if paused else min(POLL, until - now))
        self._progress = self.clock()


class SharedBucket:
    """A token bucket whose state lives in a file, shared by every process that opens it."""

    _FMT = "dd"  # tokens (bytes, may be negative: debt), time of the last take

    def __init__(self, path: str, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.rate = rate  # bytes per second
        self.burst = max(64 * 1024, rate * BURST)
        self.clock = clock

    def take(self, nbytes: int) -> float:
        """Take `nbytes` of tokens; returns how many seconds the taker must wait first."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, struct.calcsize(self._FMT), 0)
            now = self.clock()
            tokens: float
            stamp: float
            tokens, stamp = struct.unpack(self._FMT, raw) if len(raw) == 16 else (self.burst, now)
            if stamp > now:  # a clock from before a reboot
                tokens, stamp = self.burst, now
            tokens = min(self.burst, tokens + (now - stamp) * self.rate) - nbytes
            os.pwrite(fd, struct.pack(self._FMT, tokens, now), 0)
        finally:
            os.close(fd)
        return max(0.0, -tokens / self.rate)
