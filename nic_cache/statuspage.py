"""What the status page shows, computed from numbers the admin API already serves.

Pure: the inputs are the metrics snapshot (`Metrics.snapshot()`, the same dict as
`/api/v1/stats`), the ranked images (`/api/v1/popular`), the prewarm snapshot and runs
(`/api/v1/prewarm`, `/api/v1/prewarm/runs`) and the pull log; the output is a plain dict
the template renders and `/status.json` returns. "Bytes saved" is what the VMs got from
the cache beyond what the cache fetched over the WAN (`served - upstream`, never below 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .popularity import Row

CHART_SPAN = 24 * 3600.0  # the activity chart covers the last day...
CHART_BUCKET = 1800.0  # ...in half-hour buckets


def samples(snapshot: Mapping[str, float], name: str) -> Iterable[tuple[dict[str, str], float]]:
    """`(labels, value)` of each sample of `name` in a snapshot keyed `name{k=v,...}`."""
    for key, value in snapshot.items():
        base, _, rest = key.partition("{")
        if base == name:
            yield dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p), value


def metric(snapshot: Mapping[str, float], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for have, v in samples(snapshot, name) if all(have.get(k) == x for k, x in labels.items()))


def per_label(snapshot: Mapping[str, float], name: str, label: str) -> dict[str, float]:
    """`{label value: sample}` of a metric with one interesting label."""
    out: dict[str, float] = {}
    for have, value in samples(snapshot, name):
        out[have.get(label, "")] = out.get(have.get(label, ""), 0.0) + value
    return out


def summary(snapshot: Mapping[str, float]) -> dict[str, Any]:
    """The headline numbers."""
    hits = metric(snapshot, "nic_cache_hits_total")
    misses = metric(snapshot, "nic_cache_misses_total")
    served = metric(snapshot, "nic_cache_served_bytes_total")
    wan = metric(snapshot, "nic_cache_upstream_bytes_total")
    return {
        "hits": int(hits),
        "misses": int(misses),
        "hit_ratio": hits / (hits + misses) if hits + misses else None,
        "hit_ratio_by_upstream": per_label(snapshot, "nic_cache_hit_ratio", "upstream"),
        "served_bytes": int(served),
        "wan_bytes": int(wan),
        "saved_bytes": int(max(served - wan, 0.0)),
        "fills_in_flight": int(metric(snapshot, "nic_cache_fills_in_flight")),
        "fills_failed": int(metric(snapshot, "nic_cache_fills_failed_total")),
        "store_bytes": int(metric(snapshot, "nic_cache_store_bytes")),
        "capacity_bytes": int(metric(snapshot, "nic_cache_capacity_bytes")),
    }


def activity(pulls: Iterable[Row], now: float) -> dict[str, list[float]]:
    """Pulls and deploys per bucket over CHART_SPAN, for the chart (times in Unix seconds)."""
    count = int(CHART_SPAN // CHART_BUCKET)
    first = (now // CHART_BUCKET) * CHART_BUCKET - (count - 1) * CHART_BUCKET
    series = {"pull": [0.0] * count, "deploy": [0.0] * count}
    for row in pulls:
        index = int((float(row.ts) - first) // CHART_BUCKET)
        kind = str(row.kind)
        if 0 <= index < count and kind in series:
            series[kind][index] += 1
    return {"t": [first + i * CHART_BUCKET for i in range(count)], "pulls": series["pull"],
            "deploys": series["deploy"]}  # fmt: skip


def prewarm_view(snapshot: Mapping[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The scheduler, each schedule with its next run and last result, the latest runs."""
    schedules = []
    for s in snapshot.get("schedules") or []:
        last = s.get("last_run") or {}
        result = last.get("result") or {}
        schedules.append({
            "name": s.get("name"), "trigger": s.get("trigger"), "next_run": s.get("next_run"),
            "last_state": last.get("state"), "last_finished": last.get("finished"),
            "last_bytes": result.get("bytes_fetched"),
        })  # fmt: skip
    return {
        "scheduler": snapshot.get("scheduler"),
        "schedules": schedules,
        "runs": [
            {"id": r["id"], "name": r["name"], "trigger": r["trigger"], "started": r["started"],
             "finished": r["finished"], "state": r["state"],
             "bytes_fetched": (r.get("result") or {}).get("bytes_fetched")}
            for r in runs
        ],
    }  # fmt: skip


def status(
    snapshot: Mapping[str, float],
    popular: list[dict[str, Any]],
    prewarm: Mapping[str, Any],
    runs: list[dict[str, Any]],
    pulls: Iterable[Row],
    now: float,
) -> dict[str, Any]:
    """Everything the page shows."""
    return {
        "now": now,
        "summary": summary(snapshot),
        "top_images": popular,
        "prewarm": prewarm_view(prewarm, runs),
        "chart": activity(pulls, now),
    }
