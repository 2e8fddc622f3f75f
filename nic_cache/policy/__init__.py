"""The policy core: every cache decision, pure (standard library only, no I/O, no clock).

Plain rows in, decisions out::

    base      Policy (on_insert, on_access, on_remove, on_use, victims, prefetch_plan,
              state/restore), Entry (an index row), Prefetch (a planned fetch)
    lru       LRU, the store's eviction order
    pins      the pin ceiling, pin reconciliation
    pacing    the background fills' token bucket and when a paced fill may read on
    prewarm   which images a popularity prewarm fills
    hold      which images a VM holds in its own runtime (prepull)
    admission which images a VM's fan-out keeps within its byte budget

The store (eviction), the prefetcher (pins), the prewarm budget (pacing), the admin API
(/popular), `faas-accel prepull` and the benchmarks all decide through this package.
"""

from __future__ import annotations

from .base import Entry, Policy, Prefetch
from .lru import LRU

__all__ = ["LRU", "Entry", "Policy", "Prefetch"]
