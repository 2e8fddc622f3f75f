"""Which images a VM's prepull keeps within its byte budget when a new one arrives.

The fan-out (faas_accel/prepull/fanout.py) pulls into a VM the images other VMs just deployed. The
VM's disk is not the NIC's: prepull may use at most `budget` bytes of it for the images *it*
pulled (an image the VM pulled for a deploy is not prepull's to remove). Inside the budget
it keeps the most recently used; it never removes an image a container of the VM uses (a
running function), even if that leaves the new image out.

No I/O here: the agent reads the VM's state and applies the plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """An image prepull pulled into this VM."""

    name: str  # the mirror tag it is known by
    size: int  # bytes the NIC reported for it
    last_used: float  # pull time, or the last time a container was seen using it


@dataclass(frozen=True)
class Plan:
    """Pull the newcomer (or not) after removing `evict`, least recently used first."""

    pull: bool
    evict: tuple[str, ...]
    reason: str


def plan_admission(held: Iterable[Held], name: str, size: int, *, budget: int, in_use: set[str]) -> Plan:
    """Make room for `name` (`size` bytes) in `budget` (0: no limit) by dropping the least
    recently used held images that no container uses; refuse if that cannot make room."""
    if budget and size > budget:
        return Plan(False, (), f"{size} bytes exceed the whole budget of {budget}")
    others = [h for h in held if h.name != name]
    used = sum(h.size for h in others)
    if not budget or used + size <= budget:
        return Plan(True, (), "fits")
    evict: list[str] = []
    for h in sorted(others, key=lambda h: h.last_used):
        if used + size <= budget:
            break
        if h.name in in_use:
            continue
        evict.append(h.name)
        used -= h.size
    if used + size > budget:
        return Plan(False, (), "images in use leave no room within the budget")
    return Plan(True, tuple(evict), f"evicting {len(evict)} least recently used")
