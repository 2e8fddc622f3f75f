"""`bench policy` output: the JSON document, the text table and the PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .policy_sim import Outcome

GB = 1e9


def cap_key(cap: float) -> str:
    """How a capacity is written as a key: 0.1, 0.3."""
    return f"{cap:g}"


def to_json(model: dict[str, Any], results: dict[float, dict[str, Outcome]]) -> dict[str, Any]:
    """`{"model": {...}, "capacities": {"0.1": {"lru": {wan_served_share, wan_bytes,
    prefetch_bytes, ratio_to_belady}, ...}}}`; the ratio is None without a Belady run."""
    caps: dict[str, Any] = {}
    for cap, outcomes in results.items():
        belady = outcomes.get("belady")
        caps[cap_key(cap)] = {
            name: {
                "wan_served_share": round(o.wan_served_share, 6),
                "wan_bytes": o.wan_bytes,
                "prefetch_bytes": o.prefetch_bytes,
                "ratio_to_belady": _ratio(o, belady),
            }
            for name, o in outcomes.items()
        }
    return {"model": model, "capacities": caps}


def _ratio(o: Outcome, belady: Outcome | None) -> float | None:
    if belady is None or not belady.wan_served_share:
        return None
    return round(o.wan_served_share / belady.wan_served_share, 4)


def table(model: dict[str, Any], results: dict[float, dict[str, Outcome]]) -> str:
    """The model, then per capacity one row per policy, then the issue's targets."""
    m = model
    lines = [
        f"trace: {m['trace']} ({m['functions']} functions, {m['minutes']} minutes, "
        f"{m['invocations']} invocations)",
        f"images: own layer log-normal median {m['own_mb']} MB sigma {m['own_sigma']}; "
        f"{m['bases']} shared base layers median {m['base_mb']} MB sigma {m['base_sigma']} "
        f"(Zipf {m['base_skew']}); {m['layers']} layers, {m['total_bytes'] / GB:.1f} GB in all; "
        f"seed {m['seed']}",
        f"VM keep-alive {m['keepalive']} min; the NIC sees {m['nic_sees']}; learn minutes 0-{m['learn']}, "
        f"score {m['scored_minutes'][0]}-{m['scored_minutes'][1]} ({m['scored_cold_starts']} of "
        f"{m['cold_starts']} cold starts); prefetch up to {m['prefetch_mbit']} Mbit/s",
        f"WAN-served: {m['wan_served']}",
    ]
    if m.get("policy_params"):
        lines.append(f"policy parameters: {m['policy_params']}")
    for cap, outcomes in results.items():
        belady = outcomes.get("belady")
        lines += ["", f"capacity {cap:g} of all bytes ({cap * m['total_bytes'] / GB:.1f} GB)",
                  f"  {'policy':<17}{'WAN-served':>11}{'share':>8}{'WAN GB':>9}{'prefetch GB':>13}"
                  f"{'  (used)':>9}{'x Belady':>10}"]  # fmt: skip
        for name, o in outcomes.items():
            ratio = _ratio(o, belady)
            lines.append(
                f"  {name:<17}{o.wan_served:>11}{o.wan_served_share:>8.1%}{o.wan_bytes / GB:>9.1f}"
                f"{o.prefetch_bytes / GB:>13.1f}{o.prefetch_used_bytes / GB:>9.1f}"
                f"{'' if ratio is None else f'{ratio:.2f}':>10}"
            )
        lines += _targets(outcomes)
    return "\n".join(lines)


def _targets(outcomes: dict[str, Outcome]) -> list[str]:
    pred, belady = outcomes.get("predictive"), outcomes.get("belady")
    out = []
    if pred is not None and belady is not None:
        verdict = "at or below" if pred.wan_served_share <= belady.wan_served_share else "ABOVE"
        out.append(f"  target: predictive {pred.wan_served_share:.1%} is {verdict} Belady's "
                   f"{belady.wan_served_share:.1%}")  # fmt: skip
    for base in ("predictive-evict", "lru"):
        ref = outcomes.get(base)
        if pred is None or ref is None or not pred.prefetch_bytes:
            continue
        saved = ref.wan_bytes - pred.wan_bytes
        ratio = f"{pred.prefetch_bytes / saved:.2f}x" if saved > 0 else "n/a (nothing saved)"
        out.append(f"  prefetch bytes / WAN bytes saved vs {base}: {pred.prefetch_bytes / GB:.1f} / "
                   f"{saved / GB:.1f} GB = {ratio} (target <= 2x)")  # fmt: skip
    for name in ("gdsf", "s3fifo"):
        o, lru = outcomes.get(name), outcomes.get("lru")
        if o is not None and lru is not None:
            verdict = "beats" if o.wan_served_share < lru.wan_served_share else "does NOT beat"
            out.append(f"  {name} {o.wan_served_share:.1%} {verdict} LRU {lru.wan_served_share:.1%}")
    return out


def plot(results: dict[float, dict[str, Outcome]], path: Path) -> None:
    """WAN-served share against capacity, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    caps = sorted(results)
    names = list(dict.fromkeys(n for c in caps for n in results[c]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in names:
        xs = [c for c in caps if name in results[c]]
        ys = [100 * results[c][name].wan_served_share for c in xs]
        pct = [100 * x for x in xs]
        if name == "belady":
            ax.plot(pct, ys, "--", color="black", marker="o", label="belady (offline)")
        else:
            ax.plot(pct, ys, ":" if name.endswith("-evict") else "-", marker="o", label=name)
    ax.set_xlabel("NIC cache capacity (% of all image bytes)")
    ax.set_ylabel("cold starts served over the WAN (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Azure Functions trace replay: WAN-served cold starts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
