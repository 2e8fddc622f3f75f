"""The prewarm scheduler's own error, in the tree of `nic_cache.errors` (what the cache
answers it raises faas_accel.cacheapi's errors).

NicCacheError
└── ConfigError
    └── PrewarmConfigError      bad prewarm.yml or stack file (names file:line and why)
"""

from __future__ import annotations

from nic_cache.errors import ConfigError


class PrewarmConfigError(ConfigError):
    """prewarm.yml (or a stack file it names) is invalid; the message starts with file:line."""

