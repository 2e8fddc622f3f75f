"""The images the eviction policy predicts will be pulled soon: `GET /api/v1/predicted`.

The prewarm scheduler's `predicted:` source asks for them and fills them like any other
schedule's images. The plan is computed here, inside the cache, from what the eviction
policy learned (nic_cache/policy_state.py): the policy `eviction:` names, with its
parameters, its `lead` set to the asked `horizon` (how far ahead a predicted window may
open), `once` off (an image still missing is planned again at the next call) and, unless
configured, its `capacity` set to the cache's. A policy that predicts
nothing (every one but `predictive`) is refused with 405 UNSUPPORTED, so a schedule that
relies on it says so in its run instead of silently fetching nothing.

Parsing the query and rendering the answer are pure; `plan` does the reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import EvictionConfig
from .errors import NameInvalid, Unsupported
from .policy import Policy, Prefetch, make_policy, parameters
from .store import Store
from .units import parse_duration, parse_size

MAX_HORIZON = 7 * 86400.0  # no predicted window is looked for further ahead than a week
MAX_BUDGET = 2**50  # bytes (1 PiB): anything larger is a typo


@dataclass(frozen=True)
class PlanRequest:
    """`?budget=2GiB&horizon=30m`: at most `budget` bytes, windows opening within `horizon`."""

    budget: int
    horizon: float


def parse_request(args: Mapping[str, str]) -> PlanRequest:
    """The query of `GET /predicted`; raises NameInvalid naming the parameter and why."""
    unknown = sorted(set(args) - {"budget", "horizon"})
    if unknown:
        raise NameInvalid(f"unknown query parameter {unknown[0]!r} (known: budget, horizon)")
    try:
        budget = parse_size(args.get("budget", ""))
    except ValueError as exc:
        raise NameInvalid(f"query parameter budget: {exc}") from exc
    if not 0 < budget <= MAX_BUDGET:
        raise NameInvalid(f"query parameter budget: need 1 byte to 1PiB, got {args.get('budget')!r}")
    try:
        horizon = parse_duration(args.get("horizon", "30m"))
    except ValueError as exc:
        raise NameInvalid(f"query parameter horizon: {exc}") from exc
    if not 0 <= horizon <= MAX_HORIZON:
        raise NameInvalid(f"query parameter horizon: need 0s to 7d, got {args.get('horizon')!r}")
    return PlanRequest(budget, horizon)


def planning_policy(eviction: EvictionConfig, *, horizon: float, capacity: int) -> Policy:
    """A fresh instance of the eviction policy set up to plan `horizon` seconds ahead;
    raises Unsupported when that policy predicts nothing."""
    known = parameters(eviction.policy)
    if "lead" not in known:
        raise Unsupported(
            f"the eviction policy {eviction.policy!r} predicts nothing: "
            "set eviction: predictive in nic-cache.yml for a predicted prewarm"
        )
    params = dict(eviction.params)
    params["lead"] = horizon
    params["once"] = False  # read-only: the same question gets the same answer until fetched
    if not params.get("capacity"):
        params["capacity"] = capacity
    return make_policy(eviction.policy, **params)


def render(plan: Sequence[Prefetch], *, policy: str, now: float, request: PlanRequest) -> dict[str, Any]:
    """The answer: the planned images, the soonest due first, with the blobs each lacks."""
    images = [{"image": p.image, "due": round(p.due, 3), "bytes": p.bytes, "blobs": list(p.keys)}
              for p in sorted(plan, key=lambda p: (p.due, p.image))]  # fmt: skip
    return {"policy": policy, "now": now, "budget": request.budget, "horizon": request.horizon,
            "bytes": sum(p.bytes for p in plan), "images": images}  # fmt: skip


def plan(store: Store, eviction: EvictionConfig, request: PlanRequest) -> dict[str, Any]:
    """What the eviction policy predicts, from the index as it is now."""
    policy = planning_policy(eviction, horizon=request.horizon, capacity=store.capacity)
    got = store.predicted(policy, request.budget)
    return render(got, policy=eviction.policy, now=store.clock(), request=request)
