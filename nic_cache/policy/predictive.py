"""Predictive: learn each image's idle times, evict what is needed furthest ahead, prefetch
what is due soon.

After the hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., ATC'20): per
image a range-limited histogram of the time between two uses (histogram.py). When it is
representative, the next use is expected in the window from the head percentile (minus a
margin) to the tail percentile (plus a margin) after the last use; within it, at the mean of
the idle times longer than the time already idle. Past the tail the pattern failed this time
and the image counts as idle for good (its expected next use recedes as it stays idle).

The paper judges a histogram by the CV of its bin counts over days of data; with the few
dozen uses an image sees in a day that CV is high for any sparse sample, so here a histogram
is representative with `min_samples` idle times whose own CV is at most `max_cv` and at most
`max_oob` of them past the range. Otherwise the fallback is a time series: an exponentially
weighted mean of the idle times (`ewma_weight` on the newest) predicts the next use. An
image seen once (or a key no image claims) is expected `horizon` plus the time it has been
idle from now: the longer idle, the further off, as LRU would have it.

A stored key's predicted next use is the soonest of the images that hold it. Eviction takes
first the key that costs most to keep until then: the time to its predicted next use times
its size (in MiB) raised to `size_weight` (0: furthest predicted next use first, as Belady;
1, the default: a big image waiting as long as a small one goes first, which on the Azure
trace halves the gap to Belady; see results/policy/).

`prefetch_plan` offers images with a representative histogram whose window opens within
`lead` seconds (or is open) and whose keys are not all stored, once per predicted use
(`once`; the cache's read-only plan endpoint turns it off and answers alike every time), the
cheapest to hold first; with a `capacity` (bytes) it plans only what fits after dropping
keys that cost more to keep than the image does.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Policy, Prefetch
from .histogram import IdleHistogram

MIB = float(1 << 20)
MAX_KEYS = 64  # keys remembered per image (a manifest, its config and layers; more are dropped)


@dataclass
class _Image:
    keys: tuple[str, ...]
    last: float
    hist: IdleHistogram
    ewma: float | None = None
    window: tuple[float, float] | None = None  # (head, tail) seconds after `last`, if representative
    planned_for: float | None = None  # the `last` whose next use a prefetch was planned for


class Predictive(Policy):
    """Furthest predicted next use goes first; prefetch before the predicted window opens."""

    name = "predictive"

    def __init__(
        self,
        *,
        bin_seconds: float = 60.0,
        bins: int = 240,
        head: float = 5.0,
        tail: float = 99.0,
        margin: float = 0.1,
        min_samples: int = 4,
        max_cv: float = 0.3,
        max_oob: float = 0.5,
        ewma_weight: float = 0.3,
        horizon: float = 0.0,
        lead: float = 120.0,
        capacity: int = 0,
        max_images: int = 2048,
        prefetch: bool = True,
        size_weight: float = 1.0,
        once: bool = True,
    ) -> None:
        _check(bin_seconds > 0, "bin_seconds", "need seconds > 0", bin_seconds)
        _check(1 <= bins <= 10_080, "bins", "need 1 to 10080 bins", bins)
        _check(0 <= head < tail <= 100, "head", "need 0 <= head < tail <= 100 (percentiles)", head)
        _check(0 <= margin < 1, "margin", "need a fraction from 0 to below 1", margin)
        _check(min_samples >= 1, "min_samples", "need at least 1", min_samples)
        _check(max_cv > 0, "max_cv", "need a number > 0", max_cv)
        _check(0 <= max_oob <= 1, "max_oob", "need a fraction from 0 to 1", max_oob)
        _check(0 < ewma_weight <= 1, "ewma_weight", "need a weight in (0, 1]", ewma_weight)
        _check(horizon >= 0, "horizon", "need seconds >= 0 (0: the histogram's range)", horizon)
        _check(lead >= 0, "lead", "need seconds >= 0", lead)
        _check(capacity >= 0, "capacity", "need bytes >= 0 (0: unknown)", capacity)
        _check(max_images >= 1, "max_images", "need at least 1", max_images)
        _check(0 <= size_weight <= 4, "size_weight", "need a number from 0 to 4", size_weight)
        super().__init__()
        self.bin_seconds, self.bins = float(bin_seconds), int(bins)
        self.head, self.tail, self.margin = float(head), float(tail), float(margin)
        self.min_samples, self.max_cv, self.max_oob = int(min_samples), float(max_cv), float(max_oob)
        self.ewma_weight = float(ewma_weight)
        self.horizon = float(horizon) or self.bins * self.bin_seconds
        self.lead, self.capacity = float(lead), int(capacity)
        self.max_images, self.prefetch = int(max_images), bool(prefetch)
        self.size_weight = float(size_weight)
        self.once = bool(once)  # plan an image once per predicted use (False: at every call)
        self.images: OrderedDict[str, _Image] = OrderedDict()  # least recently used first
        self.holders: dict[str, set[str]] = {}  # key -> images that hold it
        self.key_size: dict[str, int] = {}  # sizes of the tracked images' keys, stored or not
        self.last_access: dict[str, float] = {}

    # -- events ---------------------------------------------------------------------------

    def on_insert(self, key: str, size: int, now: float) -> None:
        super().on_insert(key, size, now)
        self.key_size[key] = size
        self.last_access[key] = now

    def on_access(self, key: str, now: float, count: int = 1) -> None:
        if key in self.sizes:
            self.last_access[key] = max(now, self.last_access.get(key, now))

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        self.last_access.pop(key, None)
        if key not in self.holders:
            self.key_size.pop(key, None)

    def on_use(self, image: str, keys: Iterable[str], now: float) -> None:
        """Count the idle time since the image's last use (uses less than one bin apart are
        one use) and remember which keys it needs."""
        img = self.images.get(image)
        if img is None:
            img = self.images[image] = _Image((), now, IdleHistogram(self.bin_seconds, self.bins))
        elif now - img.last >= self.bin_seconds:
            idle = now - img.last
            img.hist.add(idle)
            w = self.ewma_weight
            img.ewma = idle if img.ewma is None else w * idle + (1 - w) * img.ewma
            img.window = self._window(img.hist)
        img.last = max(img.last, now)
        self._link(image, img, tuple(dict.fromkeys(keys))[:MAX_KEYS])
        self.images.move_to_end(image)
        while len(self.images) > self.max_images:
            self._forget(*self.images.popitem(last=False))

    def _link(self, name: str, img: _Image, keys: tuple[str, ...]) -> None:
        if keys == img.keys:
            return
        self._forget(name, img)
        img.keys = keys
        for key in keys:
            self.holders.setdefault(key, set()).add(name)

    def _forget(self, name: str, img: _Image) -> None:
        for key in img.keys:
            names = self.holders.get(key)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.holders[key]
                    if key not in self.sizes:
                        self.key_size.pop(key, None)

    def _window(self, h: IdleHistogram) -> tuple[float, float] | None:
        if h.n < self.min_samples or h.cv() > self.max_cv or h.oob_share() > self.max_oob:
            return None
        head = h.percentile(self.head, upper=False) * (1 - self.margin)
        tail = h.percentile(self.tail, upper=True) * (1 + self.margin)
        return head, tail

    # -- predictions ----------------------------------------------------------------------

    def window(self, image: str) -> tuple[float, float] | None:
        """The absolute (start, end) of the window the next use of `image` is expected in,
        or None when its histogram is not representative (or it is unknown)."""
        img = self.images.get(image)
        if img is None or img.window is None:
            return None
        return img.last + img.window[0], img.last + img.window[1]

    def predict(self, image: str, now: float) -> float:
        """When `image` is expected to be used next (inf when unknown)."""
        img = self.images.get(image)
        return math.inf if img is None else self._predict(img, now)

    def _predict(self, img: _Image, now: float) -> float:
        idle = now - img.last
        if img.window is not None:
            if idle <= img.window[1]:
                expected = img.hist.expected_after(idle)
                if expected is not None:
                    return img.last + expected
            return now + idle
        if img.ewma is None:  # seen once: further off the longer it has been idle
            return now + self.horizon + idle
        return img.last + img.ewma if idle < img.ewma else now + idle

    def next_use(self, key: str, now: float, cache: dict[str, float] | None = None) -> float:
        """The soonest predicted next use among the images holding `key` (a key no image
        claims is taken as an image seen once, at its last access)."""
        names = self.holders.get(key)
        if not names:
            return 2 * now + self.horizon - self.last_access.get(key, now)
        best = math.inf
        for name in names:
            if cache is not None and name in cache:
                t = cache[name]
            else:
                t = self._predict(self.images[name], now)
                if cache is not None:
                    cache[name] = t
            best = min(best, t)
        return best

    # -- decisions ------------------------------------------------------------------------

    def _ranked(self, now: float) -> list[tuple[float, float, str]]:
        """(cost, predicted next use, key), the costliest to keep first: cost is the time
        until the next use times the size (in MiB) raised to `size_weight`."""
        cache: dict[str, float] = {}
        ranked = []
        for key, size in self.sizes.items():
            t = self.next_use(key, now, cache)
            cost = max(t - now, self.bin_seconds) * (size / MIB) ** self.size_weight
            ranked.append((cost, t, key))
        ranked.sort(key=lambda r: (-r[0], -self.sizes[r[2]], r[2]))
        return ranked

    def order(self, now: float) -> Iterator[str]:
        return iter([k for _, _, k in self._ranked(now)])

    def prefetch_plan(self, now: float, budget: int) -> list[Prefetch]:
        if not self.prefetch or budget <= 0:
            return []
        due: list[tuple[float, float, str, tuple[str, ...], int]] = []
        for name, img in self.images.items():
            if img.window is None or (self.once and img.planned_for == img.last):
                continue
            start, end = img.last + img.window[0], img.last + img.window[1]
            if not start - self.lead <= now <= end:
                continue
            missing = tuple(k for k in img.keys if k not in self.sizes)
            if missing and all(k in self.key_size for k in missing):
                need = sum(self.key_size[k] for k in missing)
                cost = max(self._predict(img, now) - now, self.bin_seconds) * (need / MIB) ** self.size_weight
                due.append((cost, start, name, missing, need))
        # cheapest to hold first: a later (costlier) one never displaces an earlier one,
        # since what it displaces must cost more to hold than it does
        due.sort()
        room = self.capacity - sum(self.sizes.values()) if self.capacity else math.inf
        pool: list[tuple[float, float, str]] | None = None
        taken = 0
        plan: list[Prefetch] = []
        for cost, start, name, missing, need in due:
            if need > budget:
                continue
            if need > room:
                if pool is None:
                    pool = [r for r in self._ranked(now) if r[2] not in self.pinned]
                freed, j = 0, taken
                while room + freed < need and j < len(pool) and pool[j][0] > cost:
                    freed += self.sizes[pool[j][2]]
                    j += 1
                if room + freed < need:
                    continue
                room, taken = room + freed, j
            room -= need
            budget -= need
            if self.once:
                self.images[name].planned_for = self.images[name].last
            plan.append(Prefetch(name, missing, need, start))
        plan.sort(key=lambda p: p.due)
        return plan

    # -- learned state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Per image (at most `max_images`, each at most `bins` counters): its keys, last use,
        histogram and time-series mean; the sizes of those keys."""
        images = {name: {"keys": list(img.keys), "last": img.last, "hist": img.hist.state(),
                         "ewma": img.ewma} for name, img in self.images.items()}  # fmt: skip
        return {"images": images, "sizes": {k: self.key_size[k] for k in self.holders if k in self.key_size}}

    def adopt(self, other: Policy) -> bool:
        """Share `other`'s images, histograms and key sizes when it predicts as this one does
        (only `lead` and `capacity`, which shape prefetch plans, may differ)."""
        if not isinstance(other, Predictive) or _learning(other) != _learning(self):
            return False
        self.images, self.holders = other.images, other.holders
        self.key_size = {k: s for k, s in other.key_size.items() if k in other.holders}
        return True

    def restore(self, state: Mapping[str, Any]) -> None:
        sizes = dict(state.get("sizes", {}))
        for name, raw in dict(state.get("images", {})).items():
            hist = IdleHistogram.from_state(self.bin_seconds, self.bins, raw.get("hist", {}))
            ewma = raw.get("ewma")
            img = _Image((), float(raw["last"]), hist, None if ewma is None else float(ewma))
            img.window = self._window(hist)
            self.images[str(name)] = img
            self._link(str(name), img, tuple(map(str, raw.get("keys", ())))[:MAX_KEYS])
        while len(self.images) > self.max_images:
            self._forget(*self.images.popitem(last=False))
        for key in self.holders:
            if key in sizes:
                self.key_size[key] = int(sizes[key])


def _learning(p: Predictive) -> tuple[float, ...]:
    return (p.bin_seconds, p.bins, p.head, p.tail, p.margin, p.min_samples, p.max_cv, p.max_oob,
            p.ewma_weight, p.horizon, p.max_images, p.size_weight)  # fmt: skip


def _check(ok: bool, param: str, need: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{param}: {need}, got {value!r}")
