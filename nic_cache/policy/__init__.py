"""The policy core: every cache decision, pure (standard library only, no I/O, no clock).

Plain rows in, decisions out::

    base       Policy (on_insert, on_access, on_remove, on_use, victims, prefetch_plan,
               state/restore), Entry (an index row), Prefetch (a planned fetch)
    lru        LRU
    lfu        LFU with dynamic aging
    gdsf       GDSF (size-aware Greedy-Dual-Size-Frequency), and the Greedy-Dual base of LFU
    s3fifo     S3-FIFO (small, main and ghost FIFO queues)
    predictive per-image idle-time histograms (histogram.py): evict the furthest predicted
               next use, prefetch what is due
    belady     furthest actual next use (offline; the simulator's reference only)
    registry   make_policy(name, **params): the policies `eviction:` may name
    pins       the pin ceiling, pin reconciliation
    pacing     the background fills' token bucket and when a paced fill may read on
    prewarm    which images a popularity prewarm fills
    hold       which images a VM holds in its own runtime (prepull)
    admission  which images a VM's fan-out keeps within its byte budget

The store (eviction), the prefetcher (pins), the prewarm budget (pacing), the admin API
(/popular), `faas-accel prepull` and the benchmarks (`bench policy`) all decide through
this package.
"""

from __future__ import annotations

from .base import Entry, Policy, Prefetch
from .belady import Belady
from .gdsf import GDSF
from .lfu import LFU
from .lru import LRU
from .predictive import Predictive
from .registry import POLICIES, PolicyError, make_policy, parameters
from .s3fifo import S3FIFO

__all__ = [
    "GDSF",
    "LFU",
    "LRU",
    "POLICIES",
    "S3FIFO",
    "Belady",
    "Entry",
    "Policy",
    "PolicyError",
    "Predictive",
    "Prefetch",
    "make_policy",
    "parameters",
]
