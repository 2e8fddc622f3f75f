"""Pins: how much may be pinned, and which blobs the recorded pins want pinned.

Pins are an input to eviction (a pinned key is never a victim); these are the two decisions
around them that used to sit inside I/O code (the prefetcher and the prewarm state).
"""

from __future__ import annotations

from collections.abc import Iterable

# Pinned content may take at most this share of the capacity below the low watermark: beyond
# it, live misses would find no room (and could evict each other's blobs right after a fill).
PIN_SHARE = 0.5


def pin_ceiling(capacity: int, low_watermark: float, share: float = PIN_SHARE) -> int:
    """The most bytes pins may hold in a store of `capacity` (0: unlimited store, no ceiling)."""
    return int(capacity * low_watermark * share) if capacity > 0 else 0


def pin_refusal(
    *, capacity: int, low_watermark: float, held: int, adding: int, share: float = PIN_SHARE
) -> str | None:
    """Why pinning `adding` more bytes next to the `held` pinned ones would pin too much
    (None when it may be pinned)."""
    if capacity <= 0:
        return None
    ceiling = pin_ceiling(capacity, low_watermark, share)
    if held + adding <= ceiling:
        return None
    return (
        f"not pinned: pinned content would take {held + adding} bytes, more than {ceiling} "
        f"({share:.0%} of the capacity below the low watermark)"
    )


def reconcile(wanted: Iterable[str], current: Iterable[str]) -> tuple[list[str], list[str]]:
    """(to pin, to unpin), each sorted: pin what a pin wants and is not, unpin the rest."""
    want, have = set(wanted), set(current)
    return sorted(want - have), sorted(have - want)
