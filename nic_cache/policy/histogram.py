"""A range-limited histogram of idle times (the time between two uses of one image).

After "Serverless in the Wild" (Shahrad et al., ATC'20, section 4.2): fixed-width bins up to a
range (1-minute bins over 4 hours there); an idle time at or past the range is out of bounds
(OOB) and only counted, with its sum. The head and tail percentiles give the window in which
the next use is expected; `expected_after(s)` is the mean idle time among those longer than
`s` (the expected next use of an image idle for `s` seconds).

Pure and bounded: at most `bins` counters, whatever the number of samples.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any


class IdleHistogram:
    """Counts of idle times in `bins` bins of `width` seconds, plus the out-of-bound ones."""

    def __init__(self, width: float, bins: int) -> None:
        self.width = width
        self.bins = bins
        self.counts: dict[int, int] = {}
        self.oob = 0
        self.oob_sum = 0.0
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self._suffix: tuple[list[int], list[int], list[float]] | None = None

    def add(self, idle: float) -> None:
        """Count one idle time (seconds, >= 0)."""
        idle = max(0.0, idle)
        b = int(idle // self.width)
        if b >= self.bins:
            self.oob += 1
            self.oob_sum += idle
        else:
            self.counts[b] = self.counts.get(b, 0) + 1
        self.n += 1
        self.total += idle
        self.total_sq += idle * idle
        self._suffix = None

    @property
    def mean(self) -> float:
        """The mean idle time (0 without samples)."""
        return self.total / self.n if self.n else 0.0

    def cv(self) -> float:
        """Coefficient of variation of the idle times (std / mean); inf below two samples."""
        if self.n < 2 or self.total <= 0:
            return math.inf
        mean = self.mean
        var = max(0.0, self.total_sq / self.n - mean * mean)
        return math.sqrt(var) / mean

    def oob_share(self) -> float:
        """The share of idle times at or past the range."""
        return self.oob / self.n if self.n else 0.0

    def percentile(self, p: float, *, upper: bool) -> float:
        """The `p`-th percentile (0-100) in seconds: the lower edge of its bin (`upper` False,
        the paper's head, rounded down) or the upper edge (the tail, rounded up). Past the
        range it is the range itself. 0 without in-range samples."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(p / 100.0 * self.n))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return (b + 1) * self.width if upper else b * self.width
        return self.bins * self.width

    def beyond(self, s: float) -> tuple[int, float]:
        """(how many, their sum) of the idle times longer than `s` seconds, each in-range one
        taken at its bin's midpoint and the OOB ones at their own value."""
        bins, counts, sums = self._suffixes()
        i = bisect.bisect_right(bins, math.floor(s / self.width - 0.5))
        if i >= len(bins):
            return self.oob, self.oob_sum
        return counts[i] + self.oob, sums[i] + self.oob_sum

    def rate_after(self, s: float) -> float | None:
        """The mean of 1 / (idle time - s) over the idle times longer than `s` (each at least
        one bin away): how soon, on average, the next use comes. None when none was longer."""
        bins, _, _ = self._suffixes()
        i = bisect.bisect_right(bins, math.floor(s / self.width - 0.5))
        n, acc = self.oob, 0.0
        if self.oob:
            acc += self.oob / max(self.oob_sum / self.oob - s, self.width)
        for b in bins[i:]:
            c = self.counts[b]
            n += c
            acc += c / max((b + 0.5) * self.width - s, self.width)
        return acc / n if n else None

    def expected_after(self, s: float) -> float | None:
        """The mean idle time among those longer than `s` (None when none was longer)."""
        n, total = self.beyond(s)
        return max(s, total / n) if n else None

    def _suffixes(self) -> tuple[list[int], list[int], list[float]]:
        if self._suffix is None:
            bins = sorted(self.counts)
            counts = [0] * len(bins)
            sums = [0.0] * len(bins)
            acc_n, acc_s = 0, 0.0
            for j in range(len(bins) - 1, -1, -1):
                c = self.counts[bins[j]]
                acc_n += c
                acc_s += c * (bins[j] + 0.5) * self.width
                counts[j], sums[j] = acc_n, acc_s
            self._suffix = (bins, counts, sums)
        return self._suffix

    # -- persistence ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Plain data for `from_state` (at most `bins` counters)."""
        counts = {str(b): c for b, c in sorted(self.counts.items())}
        return {"counts": counts, "oob": self.oob, "oob_sum": self.oob_sum, "n": self.n,
                "total": self.total, "total_sq": self.total_sq}  # fmt: skip

    @classmethod
    def from_state(cls, width: float, bins: int, state: Mapping[str, Any]) -> IdleHistogram:
        """A histogram back from `state()`; counters outside today's range become OOB."""
        h = cls(width, bins)
        for b, c in dict(state.get("counts", {})).items():
            b, c = int(b), int(c)
            if c <= 0:
                continue
            if 0 <= b < bins:
                h.counts[b] = c
            else:
                h.oob += c
                h.oob_sum += c * (b + 0.5) * width
        h.oob += int(state.get("oob", 0))
        h.oob_sum += float(state.get("oob_sum", 0.0))
        h.n = int(state.get("n", sum(h.counts.values()) + h.oob))
        h.total = float(state.get("total", 0.0))
        h.total_sq = float(state.get("total_sq", 0.0))
        return h
