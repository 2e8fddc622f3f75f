"""S3-FIFO (Yang et al., SOSP'23): a small FIFO that filters one-time reads, a main FIFO with
lazy promotion, and a ghost list of keys recently dropped from the small queue.

New keys enter the small queue, unless the ghost remembers them (then they enter main).
Reads only raise a counter (at most 3). When room is needed: if the small queue holds more
than `small_share` of the stored bytes (or main is empty), its oldest key moves to main if it
was read since it came in, else it is a victim (and its key goes to the ghost when it is
removed); otherwise main's oldest key goes back to main's head with its counter lowered by
one, or is a victim when the counter is zero. The ghost keeps as many keys as main holds.

`victims` runs that algorithm for real (promotions and counter decrements stay); the keys it
picks stay at their queue's tail until `on_remove`. `order` previews it on a copy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import Entry, Policy

MAX_FREQ = 3


@dataclass
class _Queues:
    small: OrderedDict[str, None] = field(default_factory=OrderedDict)  # oldest first
    main: OrderedDict[str, None] = field(default_factory=OrderedDict)
    freq: dict[str, int] = field(default_factory=dict)
    small_bytes: int = 0

    def copy(self) -> _Queues:
        return _Queues(OrderedDict(self.small), OrderedDict(self.main), dict(self.freq), self.small_bytes)


class S3FIFO(Policy):
    """Small, main and ghost FIFO queues; `small_share` of the bytes for the small one."""

    name = "s3fifo"

    def __init__(self, *, small_share: float = 0.1) -> None:
        if not 0.0 < small_share < 1.0:
            raise ValueError(f"small_share: need a fraction between 0 and 1, got {small_share!r}")
        super().__init__()
        self.small_share = small_share
        self.q = _Queues()
        self.ghost: OrderedDict[str, None] = OrderedDict()
        self._restored: dict[str, tuple[int, int]] = {}  # key -> (counter, index hits) saved
        self._hits: dict[str, int] = {}  # key -> the index's hit count when loaded

    def on_insert(self, key: str, size: int, now: float) -> None:
        if key in self.sizes:
            return
        super().on_insert(key, size, now)
        self.q.freq[key] = 0
        if self.ghost.pop(key, 0) is None:
            self.q.main[key] = None
        else:
            self.q.small[key] = None
            self.q.small_bytes += size

    def on_access(self, key: str, now: float, count: int = 1) -> None:
        if key in self.q.freq:
            self.q.freq[key] = min(MAX_FREQ, self.q.freq[key] + count)

    def on_remove(self, key: str) -> None:
        if key in self.q.small:
            del self.q.small[key]
            self.q.small_bytes -= self.sizes.get(key, 0)
            self.ghost[key] = None
            while len(self.ghost) > max(1, len(self.q.main)):
                self.ghost.popitem(last=False)
        self.q.main.pop(key, None)
        self.q.freq.pop(key, None)
        self._hits.pop(key, None)
        super().on_remove(key)

    def order(self, now: float) -> Iterator[str]:
        return iter(self._run(self.q.copy(), None, set()))

    def victims(self, need_bytes: int, now: float, keep: Iterable[str] = ()) -> list[str]:
        if need_bytes <= 0:
            return []
        return self._run(self.q, need_bytes, set(keep) | self.pinned)

    def _run(self, q: _Queues, need: int | None, spare: set[str]) -> list[str]:
        """Evict on `q` until `need` bytes (None: everything) are chosen, sparing `spare`;
        the chosen keys end at their queue's tail."""
        total = sum(self.sizes.values())
        chosen: list[tuple[str, OrderedDict[str, None]]] = []
        freed, small_bytes, stalled = 0, q.small_bytes, 0
        while (need is None or freed < need) and (q.small or q.main):
            if q.small and (small_bytes > self.small_share * total or not q.main):
                key, _ = q.small.popitem(last=False)
                size = self.sizes.get(key, 0)
                small_bytes -= size
                if q.freq.get(key, 0) > 0 or key in spare:
                    q.small_bytes -= size
                    q.main[key] = None
                    q.freq[key] = 0
                else:
                    chosen.append((key, q.small))
                    freed += size
                continue
            key, _ = q.main.popitem(last=False)
            if key in spare:
                q.main[key] = None
                stalled += 1
                if stalled > len(q.main):
                    break  # only spared keys are left
                continue
            stalled = 0
            if q.freq.get(key, 0) > 0:
                q.freq[key] -= 1
                q.main[key] = None
            else:
                chosen.append((key, q.main))
                freed += self.sizes.get(key, 0)
        for key, queue in reversed(chosen):
            queue[key] = None
            queue.move_to_end(key, last=False)
        return [key for key, _ in chosen]

    # -- learned state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Main's keys, the ghost, and per stored key its counter and the index's hit count
        when loaded (so the next load adds only the hits since)."""
        seen = {k: [f, self._hits.get(k, 0)] for k, f in self.q.freq.items()}
        return {"main": list(self.q.main), "ghost": list(self.ghost), "seen": seen}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.ghost = OrderedDict((str(k), None) for k in state.get("ghost", ()))
        for key in state.get("main", ()):
            self.ghost[str(key)] = None  # a key main held comes back into main
        self._restored = {str(k): (int(v[0]), int(v[1])) for k, v in dict(state.get("seen", {})).items()}

    def load(self, entries: Iterable[Entry]) -> None:
        """As the base, but a key the restored state knows takes back its counter plus the
        hits the index counted since, not its lifetime hits."""
        rows = list(entries)
        super().load(rows)
        for e in rows:
            self._hits[e.key] = e.hits
            if e.key in self._restored and e.key in self.q.freq:
                freq, hits = self._restored[e.key]
                self.q.freq[e.key] = min(MAX_FREQ, freq + max(0, e.hits - hits))
        self._restored = {}
