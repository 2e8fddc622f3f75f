"""Image popularity from the pull log: exponentially decayed use counts, ranked.

Pure: no Flask, no SQLite. A *use* is a manifest pull by tag through the cache or a deploy
reported by the hook; each counts `0.5 ** (age / half_life)`, so a use one half-life old
weighs half a fresh one and the score of an image used at a steady rate levels off at about
`rate * half_life / ln 2`. Only uses inside the window count at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol


class Row(Protocol):
    """A row of the pull log (the index's PullRecord)."""

    @property
    def ts(self) -> float: ...

    @property
    def image(self) -> str: ...

    @property
    def client(self) -> str | None: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True)
class Use:
    """One recorded use of an image: when, by which client (VM: the address the cache saw the
    pull or the hook's deploy report come from), and how."""

    ts: float
    image: str
    client: str | None = None
    kind: str = "pull"  # "pull" (a manifest GET/HEAD by tag) or "deploy" (reported by the hook)

    @classmethod
    def from_row(cls, row: Row) -> Use:
        """A use from a row of the store's pull log."""
        return cls(float(row.ts), str(row.image), row.client, str(row.kind))


@dataclass(frozen=True)
class Popularity:
    """An image's standing: decayed score, counts in the window, distinct clients, last use."""

    image: str
    score: float
    pulls: int
    deploys: int
    clients: int
    last_seen: float

    @property
    def uses(self) -> int:
        """Pulls and deploys together (what `min_pulls` is compared with)."""
        return self.pulls + self.deploys


def weight(age: float, half_life: float) -> float:
    """What a use `age` seconds old counts for; a half-life of 0 turns decay off.

    Uses stamped in the future (clock skew between workers) count as fresh.
    """
    if half_life <= 0:
        return 1.0
    return float(0.5 ** (max(age, 0.0) / half_life))


def rank(
    uses: Iterable[Use],
    *,
    now: float,
    half_life: float,
    window: float | None = None,
    limit: int | None = None,
    min_uses: int = 0,
    keep: Callable[[str], bool] | None = None,
) -> list[Popularity]:
    """Images by decreasing score (ties: most recent first, then by name).

    `window` drops uses older than that many seconds; `min_uses` drops images with fewer
    uses in the window; `keep` drops images it returns False for; `limit` keeps the top K.
    """
    since = None if window is None else now - window
    score: dict[str, float] = {}
    pulls: dict[str, int] = {}
    deploys: dict[str, int] = {}
    clients: dict[str, set[str]] = {}
    last: dict[str, float] = {}
    for use in uses:
        if since is not None and use.ts < since:
            continue
        image = use.image
        score[image] = score.get(image, 0.0) + weight(now - use.ts, half_life)
        counts = deploys if use.kind == "deploy" else pulls
        counts[image] = counts.get(image, 0) + 1
        if use.client:
            clients.setdefault(image, set()).add(use.client)
        last[image] = max(last.get(image, use.ts), use.ts)
    ranked = [
        Popularity(
            image=image,
            score=s,
            pulls=pulls.get(image, 0),
            deploys=deploys.get(image, 0),
            clients=len(clients.get(image, ())),
            last_seen=last[image],
        )
        for image, s in score.items()
        if keep is None or keep(image)
    ]
    ranked = [p for p in ranked if p.uses >= min_uses]
    ranked.sort(key=lambda p: (-p.score, -p.last_seen, p.image))
    return ranked if limit is None else ranked[:limit]
