"""The demo's numbers, pure: the JSON report (`lab demo --report FILE.json`), the tables and
the targets, from the samples `demo.py` measured.

Per function, mean first-invoke seconds (deploy sent -> first 200):

    direct           the VM pulls the upstream's gzip layers through the NIC's router path
    cached           through the hook and the NIC cache, every VM
    cached_vm1       the first VM: the NIC's miss
    cached_rest      VMs 2..N (fan-out may have pulled the image into them first)
    prepulled_floor  the image already in the VM: only a container start
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faas_accel.provider.phases import PHASES
from nic_cache.units import parse_rate

KEYS = ("direct", "cached", "cached_vm1", "cached_rest", "prepulled_floor")
TARGET_FUNCTIONS = ("hello", "heavy")
TARGET_REDUCTION = 0.60  # cached at least 60 % below direct (1 Gbit)
TARGET_REDUCTION_SLOW = 0.90  # at 100 Mbit or less
TARGET_REST_OVER_FLOOR = 1.3  # VMs 2..N within 1.3x of the prepulled floor


@dataclass(frozen=True)
class Sample:
    """One deploy of one function on one VM."""

    mode: str  # direct | cached | floor
    function: str
    vm: str
    deploy_s: float
    first_invoke_s: float
    wan_bytes: int
    phases: dict[str, float] = field(default_factory=dict)  # the provider's, seconds
    first_vm: bool = False  # the first VM of its pass (for cached: the NIC's miss)


def groups(samples: Iterable[Sample], fn: str) -> dict[str, list[Sample]]:
    """A function's samples under the report's keys."""
    mine = [s for s in samples if s.function == fn]
    cached = [s for s in mine if s.mode == "cached"]
    return {
        "direct": [s for s in mine if s.mode == "direct"],
        "cached": cached,
        "cached_vm1": [s for s in cached if s.first_vm],
        "cached_rest": [s for s in cached if not s.first_vm],
        "prepulled_floor": [s for s in mine if s.mode == "floor"],
    }


def _mean(values: Iterable[float]) -> float | None:
    data = list(values)
    return round(statistics.fmean(data), 4) if data else None


def report_doc(
    samples: list[Sample], *, wan: Mapping[str, int], cost: Mapping[str, Any], lab: Mapping[str, Any]
) -> dict[str, Any]:
    """The `--report` JSON: per function the means and phase breakdowns, the WAN and cost sides."""
    functions: dict[str, Any] = {}
    for fn in dict.fromkeys(s.function for s in samples):
        g = groups(samples, fn)
        row: dict[str, Any] = {k: _mean(s.first_invoke_s for s in g[k]) for k in KEYS}
        row["phases"] = {
            k: {p: _mean(s.phases.get(p, 0.0) for s in g[k] if s.phases) for p in (*PHASES, "other")}
            for k in KEYS
            if any(s.phases for s in g[k])
        }
        functions[fn] = row
    vms = max(int(lab.get("vms", 1)), 1)
    direct = int(wan.get("direct_bytes", 0))
    cached = int(wan.get("cached_bytes", 0))
    wan_doc = {**wan, "cached_over_one_copy": round(cached / (direct / vms), 3) if direct else None}
    doc: dict[str, Any] = {"functions": functions, "wan": wan_doc, "cost": dict(cost), "lab": dict(lab)}
    doc["targets"] = targets(doc)
    return doc


def targets(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, met or not, with the numbers."""
    slow = parse_rate(str(doc["lab"].get("wan_rate", "1gbit"))) <= parse_rate("100mbit")
    goal = TARGET_REDUCTION_SLOW if slow else TARGET_REDUCTION
    out = []
    for fn in TARGET_FUNCTIONS:
        row = doc["functions"].get(fn)
        if row is None:
            continue
        d, c, rest, floor = row["direct"], row["cached"], row["cached_rest"], row["prepulled_floor"]
        red = 1 - c / d if d and c is not None else None
        out.append({
            "what": f"{fn}: cached first-invoke at least {goal:.0%} below direct",
            "measured": "not measured" if red is None else f"{red:.1%} below ({c:.2f} s vs {d:.2f} s)",
            "met": None if red is None else red >= goal,
        })  # fmt: skip
        ratio = rest / floor if rest is not None and floor else None
        out.append({
            "what": f"{fn}: VMs 2..N within {TARGET_REST_OVER_FLOOR}x of the prepulled floor",
            "measured": "not measured" if ratio is None else f"{ratio:.2f}x ({rest:.2f} s vs {floor:.2f} s)",
            "met": None if ratio is None else ratio <= TARGET_REST_OVER_FLOOR,
        })  # fmt: skip
    one = doc["wan"].get("cached_over_one_copy")
    out.append({
        "what": "WAN bytes of the cached pass = one copy of the images (direct pass / N VMs)",
        "measured": "not measured" if one is None else f"{one:.3f} copies",
        "met": None if one is None else one <= 1.02,
    })  # fmt: skip
    return out


def table(doc: Mapping[str, Any]) -> list[str]:
    """Mean first-invoke seconds per function and key, the ratio against direct."""
    lines = [
        f"{'function':<12}" + "".join(f" {k:>16}" for k in KEYS) + f" {'cached/direct':>14}",
    ]
    for fn, row in doc["functions"].items():
        cells = "".join(f" {row[k]:>14.2f} s" if row[k] is not None else f" {'-':>16}" for k in KEYS)
        ratio = f"{row['cached'] / row['direct']:.2f}x" if row["direct"] and row["cached"] else "-"
        lines.append(f"{fn:<12}{cells} {ratio:>14}")
    return lines


def phase_lines(doc: Mapping[str, Any]) -> list[str]:
    """Where each key's deploys spent their time (provider-side mean seconds; * = the largest)."""
    lines = [
        "deploy phases (provider-side mean seconds; * = the largest)",
        f"{'function':<12} {'pass':<16}" + "".join(f" {p:>9}" for p in PHASES),
    ]
    for fn, row in doc["functions"].items():
        for key, phases in row["phases"].items():
            means = [phases.get(p) or 0.0 for p in PHASES]
            top = means.index(max(means))
            cells = "".join(f" {v:>8.2f}{'*' if i == top else ' '}" for i, v in enumerate(means))
            lines.append(f"{fn:<12} {key:<16}{cells}")
    return lines
