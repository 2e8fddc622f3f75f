"""Least recently used: evict what was read (or stored) longest ago."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .base import Policy


class LRU(Policy):
    """Recency only; the store's behaviour before policies could be chosen."""

    name = "lru"

    def __init__(self) -> None:
        super().__init__()
        self._order: OrderedDict[str, None] = OrderedDict()  # least recent first

    def on_insert(self, key: str, size: int, now: float) -> None:
        super().on_insert(key, size, now)
        self._order[key] = None
        self._order.move_to_end(key)

    def on_access(self, key: str, now: float, count: int = 1) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        self._order.pop(key, None)

    def order(self, now: float) -> Iterator[str]:
        return iter(list(self._order))
