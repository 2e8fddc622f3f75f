"""Belady's furthest-next-use: the offline reference, for the trace simulator only.

It is handed every key's future use times up front (which a live cache never knows), and
evicts the stored key whose next use lies furthest ahead (never used again: first of all).
With keys of different sizes this is not the optimum, but it is the usual eviction-only
bound; a policy that prefetches can go below it. Not offered by `make_policy`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence

from .base import Policy


class Belady(Policy):
    """Evict the key whose next use (after `now`) is furthest away; ties: larger first."""

    name = "belady"

    def __init__(self, uses: Mapping[str, Sequence[float]]) -> None:
        super().__init__()
        self.uses = {k: sorted(v) for k, v in uses.items()}

    def next_use(self, key: str, now: float) -> float:
        """The first use of `key` after `now` (inf when none)."""
        times = self.uses.get(key, ())
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf

    def order(self, now: float) -> Iterator[str]:
        return iter(sorted(self.sizes, key=lambda k: (-self.next_use(k, now), -self.sizes[k], k)))
