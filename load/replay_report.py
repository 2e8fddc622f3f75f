"""Scoring and the table of the policy replay (load/bench_policy_replay.py)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class PullLike(Protocol):
    """What scoring needs of a replayed pull."""

    minute: int
    due: float
    started: float
    hit: bool
    error: str | None


def summary(pulls: Sequence[PullLike], learn: int, metrics: Mapping[str, float], *, cpu: float, rss: int,
            prefetch_bytes: int, scheduler_cpu: float) -> dict[str, Any]:  # fmt: skip
    """One run's numbers: the hit ratio over the scored pulls (from minute `learn` on; a
    failed pull counts as a miss), lateness, and the NIC's cost."""
    scored = [p for p in pulls if p.minute >= learn]
    hits = sum(1 for p in scored if p.hit and p.error is None)
    lag = sorted(max(0.0, p.started - p.due) for p in pulls)
    scored_lag = sorted(max(0.0, p.started - p.due) for p in scored)

    def metric(name: str) -> float:
        return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))

    evictions = metric("nic_cache_evictions_total")
    return {
        "hit_ratio": hits / len(scored) if scored else 0.0,
        "scored_pulls": len(scored),
        "hits": hits,
        "errors": sum(1 for p in pulls if p.error is not None),
        "first_error": next((p.error for p in pulls if p.error), None),
        "lag_p50": round(lag[len(lag) // 2], 3) if lag else 0.0,
        "lag_p99": round(lag[int(len(lag) * 0.99)], 3) if lag else 0.0,
        "lag_max": round(lag[-1], 3) if lag else 0.0,
        "lag_p99_scored": round(scored_lag[int(len(scored_lag) * 0.99)], 3) if scored_lag else 0.0,
        "cpu_seconds": round(cpu, 1),
        "peak_rss_bytes": rss,
        "evictions": int(evictions),
        "eviction_seconds": round(metric("nic_cache_eviction_seconds_total"), 2),
        "eviction_policy_seconds": round(metric("nic_cache_eviction_policy_seconds_total"), 2),
        "upstream_bytes": int(metric("nic_cache_upstream_bytes_total")),
        "prefetch_bytes_scored": prefetch_bytes,
        "scheduler_cpu_seconds": round(scheduler_cpu, 1),
    }


def concordance(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[int, int]:
    """(pairs of keys ordered alike by `a` and `b`, pairs compared); a pair within half a
    point in either counts as alike (a tie)."""
    alike = total = 0
    for x, y in itertools.combinations(sorted(a), 2):
        total += 1
        da, db = a[x] - a[y], b[x] - b[y]
        alike += abs(da) < 0.005 or abs(db) < 0.005 or (da > 0) == (db > 0)
    return alike, total


HEADER = (f"  {'policy':<20} {'service':>8} {'simulator':>9} {'diff':>6}  {'CPU s':>6} {'RSS MB':>7} "
          f"{'evictions':>9} {'evict ms':>8} {'policy ms':>9} {'late s':>6} {'errors':>6} "
          f"{'prefetch MB':>11}")  # fmt: skip


def render(results: Mapping[str, Any]) -> str:
    """The table: per capacity and policy the service's and the simulator's hit ratio, their
    difference, ranking agreement, and the NIC's cost."""
    w = results.get("workload", {})
    s = results["setup"]
    lines = [
        "Policy replay: the real cache (gunicorn) against the simulator, same slice and images",
        f"trace {s['trace']} minutes {s['start']}-{s['start'] + s['minutes']} "
        f"({w.get('functions')} functions, {w.get('cold_starts')} cold starts, "
        f"{w.get('scored_cold_starts')} scored: minutes {s['minutes'] // 2}-{s['minutes']} of the slice)",
        f"images: simulator model / {s['scale']:g} ({w.get('bytes', 0) / 1e6:.1f} MB in all); "
        f"1 trace minute = {s['minute_seconds']:g} s; cache: {s['workers']} workers, low watermark "
        f"{s['low_watermark']:g}; up to {s['concurrency']} pulls at once",
        "hit = every response of the pull (manifest by tag, config, layers) said X-Cache: hit; late s = "
        "p99 of how late scored pulls started; CPU s and RSS MB (peak, summed) of the gunicorn master and "
        "workers; evict/policy ms = per eviction run, all of it / the policy's part",
        "",
    ]  # fmt: skip
    for cap, row in results["capacities"].items():
        lines.append(f"capacity {float(cap):.0%} of all bytes")
        lines.append(HEADER)
        service: dict[str, float] = {}
        sim: dict[str, float] = {}
        for name, r in row.items():
            if "hit_ratio" not in r:
                lines.append(f"  {name:<20} {'':>8} {r['simulator_hit_ratio']:>9.1%}")
                continue
            service[name], sim[name] = r["hit_ratio"], r["simulator_hit_ratio"]
            lines.append(
                f"  {name:<20} {r['hit_ratio']:>8.1%} {r['simulator_hit_ratio']:>9.1%} "
                f"{100 * (r['hit_ratio'] - r['simulator_hit_ratio']):>+6.1f}  {r['cpu_seconds']:>6.0f} "
                f"{r['peak_rss_bytes'] / 2**20:>7.0f} {r['evictions']:>9} "
                f"{_per(r, 'eviction_seconds'):>8.1f} {_per(r, 'eviction_policy_seconds'):>9.1f} "
                f"{r['lag_p99_scored']:>6.2f} {r['errors']:>6} {r['prefetch_bytes_scored'] / 1e6:>11.1f}"
            )
        alike, total = concordance(service, sim)
        lines.append(f"  ranking, worst to best: service {_order(service)}")
        lines.append(f"                          simulator {_order(sim)}")
        lines.append(f"  pairs ranked alike: {alike} of {total}; mean |service - simulator| "
                     f"{100 * statistics.fmean(abs(service[k] - sim[k]) for k in service):.1f} points"
                     if service else "")  # fmt: skip
        if "lru" in service:
            for best in ("predictive", "predictive+prefetch"):
                if best in service:
                    gain, sim_gain = service[best] - service["lru"], sim[best] - sim["lru"]
                    lines.append(f"  {best} - lru: service {100 * gain:+.1f} points, "
                                 f"simulator {100 * sim_gain:+.1f}")  # fmt: skip
        lines.append("")
    lines.append(f"run took {results.get('seconds', 0):.0f} s (push {w.get('push_seconds', 0):.0f} s)")
    return "\n".join(lines)


def _per(r: Mapping[str, Any], key: str) -> float:
    """Milliseconds of `key` per eviction."""
    return 1000.0 * float(r[key]) / r["evictions"] if r["evictions"] else 0.0


def _order(d: Mapping[str, float]) -> str:
    return " < ".join(sorted(d, key=d.__getitem__))
