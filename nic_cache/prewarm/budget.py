"""The budget background (prewarm) fills share inside the cache, across every worker.

- Concurrency: at most `concurrency` background blob fills at once. A slot is one of N
  files `tmp/prewarm-slot-<i>.lock` held with an exclusive flock (released by the kernel
  if the worker dies).
- Bandwidth: one token bucket for all background fills together, its state (tokens, time)
  in `tmp/prewarm-bucket.lock` under flock. Each chunk the copy loop reads takes its size in
  tokens, going into debt if need be, and the loop sleeps the debt off before reading on
  (the arithmetic and the decision to read on are nic_cache/policy/pacing.py).
- Live first: a background fill that a client now waits on (`Fills.live_reader`) is not
  paced any more at all. While any client waits on any fill (`Fills.live_misses`), the
  other background fills pause, reading one chunk at most every `pacing.KEEPALIVE` seconds so the
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
from ..policy import pacing

DEFAULT_LIMITS = {"concurrency": 2, "bandwidth": 0}  # when no prewarm file says otherwise
POLL = 0.05  # seconds between looks at the live markers while waiting


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
            live = self.fills.live_misses()
            if pacing.may_read(now=now, until=until, progress_at=self._progress, live_misses=live):
                break
            held = pacing.paused(now=now, progress_at=self._progress, live_misses=live)
            self.sleep(POLL if held else min(POLL, until - now))
        self._progress = self.clock()


class SharedBucket:
    """A token bucket whose state lives in a file, shared by every process that opens it."""

    _FMT = "dd"  # tokens (bytes, may be negative: debt), time of the last take

    def __init__(self, path: str, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.rate = rate  # bytes per second
        self.clock = clock

    def take(self, nbytes: int) -> float:
        """Take `nbytes` of tokens; returns how many seconds the taker must wait first."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, struct.calcsize(self._FMT), 0)
            state = pacing.Bucket(*struct.unpack(self._FMT, raw)) if len(raw) == 16 else None
            state, wait = pacing.take(state, now=self.clock(), rate=self.rate, nbytes=nbytes)
            os.pwrite(fd, struct.pack(self._FMT, state.tokens, state.stamp), 0)
        finally:
            os.close(fd)
        return wait
