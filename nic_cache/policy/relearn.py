"""Bring a fresh policy up to date from plain rows: its saved state, the stored items, and
the image uses logged since that state was saved.

The store builds a policy for each decision in whichever worker process decides (an
eviction, a predicted prefetch plan); `relearn` is how it gets back what it knew. Pure: the
rows come from the caller (nic_cache/policy_state.py reads them from the index).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Entry, Policy


@dataclass(frozen=True)
class Use:
    """An image asked for at `ts` (a pull by tag), needing `keys` (its manifest's closure)."""

    ts: float
    image: str
    keys: tuple[str, ...]


def learns_uses(policy: Policy) -> bool:
    """Whether `policy` does anything with `on_use` (else the uses need not be read)."""
    return type(policy).on_use is not Policy.on_use


def relearn(
    policy: Policy, state: Mapping[str, Any], entries: Iterable[Entry], uses: Iterable[Use]
) -> str | None:
    """Restore `state`, load `entries`, then feed `uses` in order. Returns why the state was
    dropped (a state another version saved), or None."""
    problem = None
    if state:
        try:
            policy.restore(state)
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"saved state dropped: {exc}"
    policy.load(entries)
    for use in uses:
        policy.on_use(use.image, use.keys, use.ts)
    return problem
