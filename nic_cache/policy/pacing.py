"""Pacing of background (prewarm) fills: the shared token bucket and when a fill may read on.

Pure arithmetic; `nic_cache/prewarm/budget.py` keeps the bucket's state in a locked file and
does the sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

KEEPALIVE = 5.0  # a paused background fill still reads a chunk this often (the upstream stays)
BURST = 0.1  # seconds of bandwidth a quiet bucket may hand out at once
MIN_BURST = 64 * 1024  # bytes


def burst(rate: float) -> float:
    """The bucket's depth, in bytes, for `rate` bytes/s."""
    return max(MIN_BURST, rate * BURST)


@dataclass(frozen=True)
class Bucket:
    """A token bucket's state: tokens (bytes; negative is debt) as of `stamp`."""

    tokens: float
    stamp: float


def take(state: Bucket | None, *, now: float, rate: float, nbytes: int) -> tuple[Bucket, float]:
    """Take `nbytes` from the bucket (`None`: a fresh, full one); returns the new state and
    how many seconds the taker must wait before reading on.

    A stamp in the future (a clock from before a reboot) restarts the bucket full.
    """
    depth = burst(rate)
    if state is None or state.stamp > now:
        state = Bucket(depth, now)
    tokens = min(depth, state.tokens + (now - state.stamp) * rate) - nbytes
    return Bucket(tokens, now), max(0.0, -tokens / rate)


def may_read(*, now: float, until: float, progress_at: float, live_misses: bool) -> bool:
    """Whether a background fill that owes the bucket until `until` and last read at
    `progress_at` may read its next chunk: not while a client waits on a live miss (except
    for one chunk every KEEPALIVE seconds), and not before its debt is paid off."""
    return not paused(now=now, progress_at=progress_at, live_misses=live_misses) and now >= until


def paused(*, now: float, progress_at: float, live_misses: bool) -> bool:
    """Whether the fill is held back for live misses (then it polls, else it sleeps its debt)."""
    return now - progress_at < KEEPALIVE and live_misses
