"""What a VM holds in its own runtime: the VM side's choice among what its NIC holds.

`faas-accel prepull` (faas_accel/prepull/) asks the NIC for its images and their
popularity, then pulls what `choose` picks; `missing` names the requested images it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """A tag the NIC holds, as its admin API describes it."""

    image: str
    digest: str
    size: int
    complete: bool
    score: float = 0.0


def choose(
    cached: Iterable[Candidate],
    *,
    limit: int,
    budget: int = 0,
    only: Sequence[str] = (),
) -> list[Candidate]:
    """Images to hold in the VM: complete on the NIC, most popular first (then the most
    recently listed), at most `limit` of them and `budget` bytes in all (0: no byte limit).
    `only` restricts the choice to those images (e.g. a stack file's)."""
    wanted = set(only)
    pool = [c for c in cached if c.complete and (not wanted or c.image in wanted)]
    pool.sort(key=lambda c: -c.score)  # stable: equal scores keep the NIC's order
    out: list[Candidate] = []
    used = 0
    for c in pool:
        if len(out) >= limit:
            break
        if budget and used + c.size > budget:
            continue
        out.append(c)
        used += c.size
    return out


def missing(cached: Iterable[Candidate], only: Sequence[str]) -> list[str]:
    """The requested images the NIC does not hold completely (in the order requested)."""
    held = {c.image for c in cached if c.complete}
    return [image for image in dict.fromkeys(only) if image not in held]
