"""Replay an invocation trace through the cache policies (nic_cache/policy): `bench policy`.

The model (every knob in `ImageModel`, printed with the results):
- each function is one image: its own layer (log-normal size, median `own_mb`, `own_sigma`)
  on one of `bases` shared base layers (log-normal around `base_mb`; functions pick a base
  with Zipf(`base_skew`) popularity), all drawn from a RNG seeded with `seed`;
- the VM keeps a function's image for `keepalive` minutes after its last invocation: a minute
  with invocations after a longer gap (or the first one) is a cold start, which needs the
  image from the NIC; the NIC sees only those pulls (warm invocations never reach it);
- the NIC cache holds `capacity` x the bytes of all layers; a cold start whose layers are not
  all stored is served over the WAN (its missing bytes are on the critical path);
- policies see the whole day, but only the minutes from `learn` on are scored: the first
  half teaches, the second counts;
- before each minute's cold starts a policy may prefetch (`prefetch_plan`) up to
  `prefetch_mbit` of one minute's link time.
Belady (furthest actual next use, offline) is the eviction-only reference.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from nic_cache.policy import Belady, Policy, make_policy

from .trace import Trace

MB = 1_000_000
POLICY_NAMES = ("lru", "lfu", "gdsf", "s3fifo", "predictive", "belady")
EXTRA_NAMES = ("predictive-evict",)  # predictive without prefetch: what prefetch adds


@dataclass(frozen=True, kw_only=True)
class ImageModel:
    """How the trace's functions become images and cold starts (see the module docstring)."""

    own_mb: float = 60.0  # median of a function's own layer
    own_sigma: float = 1.0  # log-normal sigma of the own layer
    bases: int = 8  # shared base layers
    base_mb: float = 50.0  # median size of a base layer
    base_sigma: float = 0.5
    base_skew: float = 1.0  # Zipf exponent of the bases' popularity
    keepalive: int = 10  # minutes the VM keeps an idle function's image
    learn: int = 720  # minutes the policies learn on before scoring starts
    prefetch_mbit: float = 200.0  # link share prefetches may use (Mbit/s)
    seed: int = 1

    def __post_init__(self) -> None:
        checks = [("own_mb", self.own_mb > 0), ("own_sigma", self.own_sigma >= 0), ("bases", self.bases >= 0),
                  ("base_mb", self.base_mb > 0), ("base_sigma", self.base_sigma >= 0),
                  ("base_skew", self.base_skew >= 0), ("keepalive", self.keepalive >= 0),
                  ("learn", self.learn >= 0), ("prefetch_mbit", self.prefetch_mbit >= 0)]  # fmt: skip
        for name, ok in checks:
            if not ok:
                raise ValueError(f"{name}: out of range: {getattr(self, name)!r}")

    @property
    def prefetch_budget(self) -> int:
        """Bytes prefetches may move per minute."""
        return int(self.prefetch_mbit * 1e6 / 8 * 60)


@dataclass(frozen=True)
class Images:
    """Layer sizes and each function's layers (base first)."""

    sizes: dict[str, int]
    keys: tuple[tuple[str, ...], ...]

    @property
    def total(self) -> int:
        """Bytes of all layers."""
        return sum(self.sizes.values())


def build_images(n: int, model: ImageModel) -> Images:
    """Images for `n` functions, drawn from the model's seeded RNG."""
    rng = random.Random(model.seed)
    sizes: dict[str, int] = {}
    bases = [f"base{b}" for b in range(model.bases)]
    for b in bases:
        sizes[b] = max(1, round(rng.lognormvariate(math.log(model.base_mb * MB), model.base_sigma)))
    weights = [1 / (r + 1) ** model.base_skew for r in range(len(bases))]
    keys = []
    for i in range(n):
        own = f"fn{i}"
        sizes[own] = max(1, round(rng.lognormvariate(math.log(model.own_mb * MB), model.own_sigma)))
        keys.append(((rng.choices(bases, weights)[0],) if bases else ()) + (own,))
    return Images(sizes, tuple(keys))


@dataclass(frozen=True)
class ColdStart:
    """Function `fn` needs its image at `t` seconds (minute `minute`)."""

    t: float
    minute: int
    fn: int


def cold_starts(trace: Trace, keepalive: int) -> list[ColdStart]:
    """The trace's cold starts in time order; within a minute, in function order, 1 ms apart."""
    by_minute: dict[int, list[int]] = {}
    for fn, minutes in enumerate(trace.active):
        last: int | None = None
        for m in minutes:
            if last is None or m - last > keepalive:
                by_minute.setdefault(m, []).append(fn)
            last = m
    out: list[ColdStart] = []
    for m in sorted(by_minute):
        out.extend(ColdStart(60.0 * m + 0.001 * k, m, fn) for k, fn in enumerate(by_minute[m]))
    return out


@dataclass
class Outcome:
    """What one policy did at one capacity over the scored minutes."""

    cold_starts: int = 0
    wan_served: int = 0
    wan_bytes: int = 0
    prefetch_bytes: int = 0
    prefetch_used_bytes: int = 0  # of prefetch_bytes, those a cold start then found
    seconds: float = 0.0

    @property
    def wan_served_share(self) -> float:
        """WAN-served cold starts as a fraction of the scored cold starts."""
        return self.wan_served / self.cold_starts if self.cold_starts else 0.0


@dataclass
class _Cache:
    policy: Policy
    capacity: int
    sizes: dict[str, int]
    stored: dict[str, bool] = field(default_factory=dict)  # key -> prefetched (scored), not used yet
    used: int = 0

    def make_room(self, need: int, now: float, keep: Iterable[str]) -> None:
        over = self.used + need - self.capacity
        if over > 0:
            for key in self.policy.victims(over, now, keep=list(keep)):
                self.used -= self.sizes[key]
                del self.stored[key]
                self.policy.on_remove(key)

    def add(self, keys: Iterable[str], now: float, prefetched: bool) -> int:
        """Store `keys` if they fit; returns the bytes stored."""
        added = 0
        for key in keys:
            size = self.sizes[key]
            if key not in self.stored and self.used + size <= self.capacity:
                self.stored[key] = prefetched
                self.used += size
                added += size
                self.policy.on_insert(key, size, now)
        return added


def replay(
    policy: Policy, images: Images, events: list[ColdStart], *, capacity: int, model: ImageModel,
    minutes: int, names: tuple[str, ...],
) -> Outcome:  # fmt: skip
    """Run `events` through `policy` with a cache of `capacity` bytes; score from `model.learn`."""
    cache = _Cache(policy, capacity, images.sizes)
    out = Outcome()
    budget = model.prefetch_budget
    i = 0
    for minute in range(minutes):
        scored = minute >= model.learn
        now = 60.0 * minute
        for p in policy.prefetch_plan(now, budget):
            fetch = [k for k in p.keys if k not in cache.stored]
            cache.make_room(sum(images.sizes[k] for k in fetch), now, p.keys)
            added = cache.add(fetch, now, prefetched=scored)
            out.prefetch_bytes += added if scored else 0
        while i < len(events) and events[i].minute == minute:
            ev = events[i]
            i += 1
            keys = images.keys[ev.fn]
            policy.on_use(names[ev.fn], keys, ev.t)
            missing = [k for k in keys if k not in cache.stored]
            for k in keys:
                if k in cache.stored:
                    policy.on_access(k, ev.t)
                    if cache.stored[k] and scored:
                        out.prefetch_used_bytes += images.sizes[k]
                    cache.stored[k] = False
            need = sum(images.sizes[k] for k in missing)
            cache.make_room(need, ev.t, keys)
            cache.add(missing, ev.t, prefetched=False)
            if scored:
                out.cold_starts += 1
                out.wan_served += bool(missing)
                out.wan_bytes += need
    return out


def policy_factory(name: str, images: Images, events: list[ColdStart], capacity: int,
                   params: dict[str, dict[str, Any]]) -> Policy:  # fmt: skip
    """A fresh policy for one run: Belady gets the future, predictive the capacity."""
    if name == "belady":
        uses: dict[str, list[float]] = {}
        for ev in events:
            for key in images.keys[ev.fn]:
                uses.setdefault(key, []).append(ev.t)
        return Belady(uses)
    base = "predictive" if name == "predictive-evict" else name
    extra: dict[str, Any] = dict(params.get(base, {}))
    if base == "predictive":
        extra.setdefault("capacity", capacity)
        if name == "predictive-evict":
            extra["prefetch"] = False
    return make_policy(base, **extra)


def simulate(
    trace: Trace, model: ImageModel, capacities: Iterable[float], policies: Iterable[str],
    *, params: dict[str, dict[str, Any]] | None = None, progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], dict[float, dict[str, Outcome]]]:  # fmt: skip
    """Every policy at every capacity; returns (the model as run, outcomes by capacity)."""
    if model.learn >= trace.minutes:
        raise ValueError(f"learn: {model.learn} minutes leave no minute to score in {trace.minutes}")
    images = build_images(len(trace.functions), model)
    events = cold_starts(trace, model.keepalive)
    results: dict[float, dict[str, Outcome]] = {}
    for cap in capacities:
        nbytes = int(cap * images.total)
        results[cap] = {}
        for name in policies:
            start = time.monotonic()
            policy = policy_factory(name, images, events, nbytes, params or {})
            outcome = replay(policy, images, events, capacity=nbytes, model=model,
                             minutes=trace.minutes, names=trace.functions)  # fmt: skip
            outcome.seconds = time.monotonic() - start
            results[cap][name] = outcome
            progress(f"capacity {cap:g}: {name:<16} WAN-served {outcome.wan_served_share:6.1%} "
                     f"({outcome.seconds:.1f} s)")  # fmt: skip
    return describe(trace, model, images, events, params or {}), results


def describe(trace: Trace, model: ImageModel, images: Images, events: list[ColdStart],
             params: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """The model as run: its knobs plus what they produced from the trace."""
    return {
        **asdict(model),
        "trace": trace.source,
        "functions": len(trace.functions),
        "minutes": trace.minutes,
        "invocations": trace.invocations,
        "layers": len(images.sizes),
        "total_bytes": images.total,
        "cold_starts": len(events),
        "scored_minutes": [model.learn, trace.minutes],
        "scored_cold_starts": sum(1 for e in events if e.minute >= model.learn),
        "nic_sees": "cold-start pulls only",
        "wan_served": "a cold start with any layer missing from the NIC cache",
        "policy_params": params,
    }
