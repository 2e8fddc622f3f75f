"""Where a deploy's time goes: contiguous phases measured by one monotonic clock.

A deploy is cut into back-to-back phases, each ending where the next begins, so they add
up to the deploy's total by construction (the small rest, the provider's own bookkeeping,
is `other`):

    resolve   the runtime asks the registry for the manifest
    fetch     layer and config bytes move into the runtime's content store
    unpack    layers are decompressed and applied to snapshots
    start     the container is created and its task started
    healthy   the function's health check first answers 200

The runtimes call `PhaseTimer.mark(phase)` when they see a phase end (ctr's progress
output, the docker daemon's pull events); a phase they never report lasts zero seconds.
`server_timing` renders the phases as a `Server-Timing` header (milliseconds), which the
deploy answer carries back through the hook to whoever deployed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping

PHASES = ("resolve", "fetch", "unpack", "start", "healthy")
OTHER = "other"
HEADER = "Server-Timing"

Mark = Callable[[str], None]


def no_mark(phase: str) -> None:
    """A `Mark` that records nothing (pulls outside a deploy)."""


class PhaseTimer:
    """Times one deploy: `mark(p)` closes phase `p` at the current instant."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._last = self.started
        self._phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._phases[OTHER] = 0.0
        self.total = 0.0

    def mark(self, phase: str) -> None:
        """End `phase` now: the time since the previous mark is added to it."""
        now = self.clock()
        self._phases[phase if phase in self._phases else OTHER] += now - self._last
        self._last = now

    def finish(self) -> dict[str, float]:
        """Close the deploy: what is left since the last mark is `other`; the phases, in seconds."""
        self.mark(OTHER)
        self.total = self._last - self.started
        return self.phases

    @property
    def phases(self) -> dict[str, float]:
        return dict(self._phases)


def server_timing(phases: Mapping[str, float], total: float) -> str:
    """`resolve;dur=12.3, fetch;dur=..., total;dur=...` (milliseconds), as RFC Server-Timing."""
    parts = [f"{name};dur={seconds * 1000:.1f}" for name, seconds in phases.items()]
    parts.append(f"total;dur={total * 1000:.1f}")
    return ", ".join(parts)


def parse_server_timing(header: str | None) -> dict[str, float]:
    """The inverse of `server_timing`: {name: seconds}; entries without `dur` are skipped."""
    found: dict[str, float] = {}
    for entry in (header or "").split(","):
        name, *params = (p.strip() for p in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip() == "dur":
                with contextlib.suppress(ValueError):
                    found[name] = float(value.strip().strip('"')) / 1000
    return found
