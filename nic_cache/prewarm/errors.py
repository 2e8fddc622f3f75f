"""The errors prewarming adds to the tree in `nic_cache.errors`.

NicCacheError
├── ConfigError
│   └── PrewarmConfigError      bad prewarm.yml or stack file (names file:line and why)
├── RegistryError
│   ├── SchedulerUnavailable    503 UNAVAILABLE: no scheduler holds the lease
│   └── NotLeader               409 NOT_LEADER: a scheduler without the lease tried to run
└── PrewarmError                the scheduler's side: the cache answered with an error
    └── CacheUnreachable        the cache could not be reached at all
"""

from __future__ import annotations

from ..errors import ConfigError, NicCacheError, RegistryError


class PrewarmConfigError(ConfigError):
    """prewarm.yml (or a stack file it names) is invalid; the message starts with file:line."""


class SchedulerUnavailable(RegistryError):
    """A run was requested but no prewarm scheduler is connected to this cache."""

    code, status = "UNAVAILABLE", 503


class NotLeader(RegistryError):
    """A scheduler that does not hold the cache's lease asked to start a run."""

    code, status = "NOT_LEADER", 409


class PrewarmError(NicCacheError):
    """The cache's admin API refused a scheduler's call; carries the HTTP status and code."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CacheUnreachable(PrewarmError):
    """The cache did not answer (refused, reset, timed out)."""
