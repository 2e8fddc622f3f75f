"""The errors of the prewarm scheduler, in the tree of `nic_cache.errors`.

NicCacheError
├── ConfigError
│   └── PrewarmConfigError      bad prewarm.yml or stack file (names file:line and why)
└── PrewarmError                the cache answered a scheduler's call with an error
    └── CacheUnreachable        the cache could not be reached at all
"""

from __future__ import annotations

from nic_cache.errors import ConfigError, NicCacheError


class PrewarmConfigError(ConfigError):
    """prewarm.yml (or a stack file it names) is invalid; the message starts with file:line."""


class PrewarmError(NicCacheError):
    """The cache's admin API refused a scheduler's call; carries the HTTP status and code."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CacheUnreachable(PrewarmError):
    """The cache did not answer (refused, reset, timed out)."""
