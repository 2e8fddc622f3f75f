"""Which images a prewarm run fills: the choice behind `GET /api/v1/popular`.

Rows of the pull log go in (`ts`, `image`, `client`, `kind`), images come out ranked by
decayed use (nic_cache/popularity.py), only those of registries the cache can fill from.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from ..errors import NicCacheError
from ..popularity import Popularity, Row, Use, rank
from ..reference import parse_image


def popular(
    rows: Iterable[Row],
    *,
    now: float,
    half_life: float,
    window: float,
    limit: int,
    min_uses: int,
    registries: Collection[str],
) -> list[Popularity]:
    """The `limit` most used images of the last `window` seconds (each use decayed with
    `half_life`) that have at least `min_uses` uses and come from one of `registries`."""
    uses = (Use.from_row(r) for r in rows)
    return rank(uses, now=now, half_life=half_life, window=window, limit=limit, min_uses=min_uses,
                keep=lambda image: registry(image) in registries)  # fmt: skip


def registry(image: str) -> str | None:
    """The registry an image reference names (None when it does not parse)."""
    try:
        return parse_image(image).registry
    except NicCacheError:
        return None
