"""The contract every cache policy implements, and the rows it is fed.

A policy is told what happens to the cache (`on_insert`, `on_access`, `on_remove`, and the
image-level `on_use`) and answers two questions: which stored items to drop to free
`need_bytes` (`victims`), and what to fetch ahead of time with a byte budget
(`prefetch_plan`). It does no I/O and keeps no clock: every call carries `now`.

Keys are opaque strings (blob digests in the cache, layer names in the simulator). Pinned
keys and the caller's `keep` are never victims; a policy that cannot free `need_bytes`
returns what it can.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Entry:
    """One stored item as the index describes it (a row of the store's `blobs` table)."""

    key: str
    size: int
    created: float
    last_access: float
    hits: int = 0
    pinned: bool = False


@dataclass(frozen=True)
class Prefetch:
    """Fetch `image` (whose items are `keys`) now: its next use is expected at `due`."""

    image: str
    keys: tuple[str, ...]
    bytes: int  # of `keys` not stored yet
    due: float


class Policy:
    """Base of every policy: sizes and pins, and `victims` walking the eviction `order`.

    Subclasses keep their own ordering state and implement `order`; the defaults here make
    `on_use` and `prefetch_plan` no-ops and `state`/`restore` empty.
    """

    name: ClassVar[str] = "policy"

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.pinned: set[str] = set()

    # -- events ---------------------------------------------------------------------------

    def on_insert(self, key: str, size: int, now: float) -> None:
        """`key` (`size` bytes) was stored (after a miss, or a prefetch)."""
        self.sizes[key] = size

    def on_access(self, key: str, now: float, count: int = 1) -> None:
        """A stored `key` was read `count` times, the last at `now`."""

    def on_remove(self, key: str) -> None:
        """`key` left the store (evicted, or deleted by hand)."""
        self.sizes.pop(key, None)
        self.pinned.discard(key)

    def on_use(self, image: str, keys: Iterable[str], now: float) -> None:
        """An image whose items are `keys` was asked for (a pull by tag, a deploy)."""

    def pin(self, key: str, pinned: bool = True) -> None:
        """Pin (never a victim) or unpin a stored key."""
        if pinned:
            self.pinned.add(key)
        else:
            self.pinned.discard(key)

    # -- decisions ------------------------------------------------------------------------

    def order(self, now: float) -> Iterator[str]:
        """Stored keys, the first to evict first (pins included; `victims` skips them)."""
        raise NotImplementedError

    def victims(self, need_bytes: int, now: float, keep: Iterable[str] = ()) -> list[str]:
        """Keys to drop, in order, until at least `need_bytes` are freed (or nothing is left)."""
        if need_bytes <= 0:
            return []
        spare = set(keep) | self.pinned
        out: list[str] = []
        freed = 0
        for key in self.order(now):
            if freed >= need_bytes:
                break
            if key in spare:
                continue
            out.append(key)
            freed += self.sizes.get(key, 0)
        return out

    def prefetch_plan(self, now: float, budget: int) -> list[Prefetch]:
        """Images worth fetching now within `budget` bytes, the most urgent first."""
        return []

    # -- learned state --------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What this policy learned that must survive a restart (plain, JSON-able, bounded)."""
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `state` returned (in a fresh instance, before any event)."""

    def adopt(self, other: Policy) -> bool:
        """Take over what `other` (an instance of the same policy and parameters, no longer
        used) learned from image uses, as `restore(other.state())` would but without the copy;
        False when this policy cannot (the default: its state is not learned from uses)."""
        return False

    def load(self, entries: Iterable[Entry]) -> None:
        """Learn the current content from index rows: each inserted at `created` and, when
        read since, read `hits` times (at least once) with the last read at `last_access`.

        Events are replayed in time order; at equal times the entry created first goes
        first, which is the store's own tie rule (ORDER BY last_access, created).
        """
        events: list[tuple[float, float, int, str, Entry]] = []
        for e in entries:
            events.append((e.created, e.created, 0, e.key, e))
            if e.last_access > e.created or e.hits:
                events.append((e.last_access, e.created, 1, e.key, e))
        events.sort(key=lambda ev: ev[:4])
        for at, _, kind, key, e in events:
            if kind == 0:
                self.on_insert(key, e.size, at)
                if e.pinned:
                    self.pin(key)
            else:
                self.on_access(key, at, max(e.hits, 1))
