"""The errors the cache's prewarm state adds to the tree in `nic_cache.errors`.

RegistryError
├── SchedulerUnavailable    503 UNAVAILABLE: no scheduler holds the lease
└── NotLeader               409 NOT_LEADER: a scheduler without the lease tried to run
"""

from __future__ import annotations

from ..errors import RegistryError


class SchedulerUnavailable(RegistryError):
    """A run was requested but no prewarm scheduler is connected to this cache."""

    code, status = "UNAVAILABLE", 503


class NotLeader(RegistryError):
    """A scheduler that does not hold the cache's lease asked to start a run."""

    code, status = "NOT_LEADER", 409
