"""Greedy-Dual-Size-Frequency (Cherkasova 1998): keep what is read often and costs little room.

Each stored key has a priority `age + frequency * value`; the lowest goes first. `age`
(the "inflation" of Greedy-Dual) rises to the priority of the last victim chosen, so a key
that was hot long ago but is read no more sinks below newer keys instead of staying forever.
GDSF's value is 1 / size (in MiB, raised to `size_weight`): of two keys read equally often,
the bigger goes first. LFU with dynamic aging (lfu.py) is the same with value 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import count
from typing import Any

from .base import Policy

MIB = float(1 << 20)


class GreedyDual(Policy):
    """The Greedy-Dual family: priority = age + frequency * `value(key)`, lowest evicted first."""

    def __init__(self) -> None:
        super().__init__()
        self.freq: dict[str, int] = {}
        self.priority: dict[str, float] = {}
        self.age = 0.0
        self._tick = count()
        self._seq: dict[str, int] = {}  # ties: the key touched longest ago goes first

    def value(self, key: str) -> float:
        """What one read of `key` is worth (a hit's saving per unit of room)."""
        raise NotImplementedError

    def on_insert(self, key: str, size: int, now: float) -> None:
        super().on_insert(key, size, now)
        self.freq[key] = 1
        self._bump(key)

    def on_access(self, key: str, now: float, count: int = 1) -> None:
        if key in self.freq:
            self.freq[key] += count
            self._bump(key)

    def on_remove(self, key: str) -> None:
        super().on_remove(key)
        for table in (self.freq, self.priority, self._seq):
            table.pop(key, None)

    def _bump(self, key: str) -> None:
        self.priority[key] = self.age + self.freq[key] * self.value(key)
        self._seq[key] = next(self._tick)

    def order(self, now: float) -> Iterator[str]:
        return iter(sorted(self.priority, key=lambda k: (self.priority[k], self._seq[k])))

    def victims(self, need_bytes: int, now: float, keep: Iterable[str] = ()) -> list[str]:
        out = super().victims(need_bytes, now, keep)
        if out:
            self.age = max(self.age, max(self.priority[k] for k in out))
        return out

    def state(self) -> dict[str, Any]:
        return {"age": self.age}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.age = float(state.get("age", 0.0))


class GDSF(GreedyDual):
    """Size-aware: value = (1 MiB / size) ** size_weight (0: plain LFU with aging)."""

    name = "gdsf"

    def __init__(self, *, size_weight: float = 1.0) -> None:
        if not 0.0 <= size_weight <= 4.0:
            raise ValueError(f"size_weight: need a number from 0 to 4, got {size_weight!r}")
        super().__init__()
        self.size_weight = size_weight

    def value(self, key: str) -> float:
        return float((MIB / max(1, self.sizes.get(key, 1))) ** self.size_weight)
