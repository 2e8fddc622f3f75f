"""Least frequently used, with dynamic aging (LFU-DA, Arlitt et al. 2000).

A key's priority is `age + reads`; `age` rises to the priority of each victim, so counts
earned long ago stop protecting a key that is read no more (gdsf.py has the mechanics).
"""

from __future__ import annotations

from .gdsf import GreedyDual


class LFU(GreedyDual):
    """Frequency with aging; size-blind (GDSF is the size-aware sibling)."""

    name = "lfu"

    def value(self, key: str) -> float:
        return 1.0
