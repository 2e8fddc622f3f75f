"""The real service, replayed: a slice of the Azure Functions 2019 trace through the real
gunicorn cache, once per eviction policy and capacity, next to the simulator on the same
slice (issue 12, point 4).

An upstream CNCF registry (`docker-registry serve`, 127.0.0.1) holds one image per function,
built as `faas-accel bench policy` models it with every size divided by `--scale`
(load/replay_workload.py). For each capacity and policy a fresh cache (`faas-accel cache
serve`) runs with `capacity` = that share of all bytes and `eviction:` that policy, and the
slice's cold starts are replayed time-compressed (one trace minute = `--minute-seconds`; the
predictive policy's time parameters scaled alike), each pulled as a runtime pulls (manifest
by tag, then every blob; plain HTTP, up to `--concurrency` at once). A pull is a hit when
every response said `X-Cache: hit` (served from the store). The first half of the slice
teaches, the second is scored, as in the simulator. `predictive+prefetch` also runs the
prewarm scheduler with a `predicted:` schedule (every second, budget and horizon scaled).
NIC cost per run: CPU seconds and peak RSS of the gunicorn master and workers (/proc), and
the time evictions took (the cache's eviction metrics)::

    .venv/bin/python -m load.bench_policy_replay                      # 8 h slice, ~35 min
    .venv/bin/python -m load.bench_policy_replay --minutes 60 --capacity 0.3 --policies lru
    .venv/bin/python -m load.bench_policy_replay --json | --save results/policy/replay
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests
import yaml

from faas_accel.bench.policy_sim import ImageModel
from faas_accel.bench.rss import memory
from faas_accel.bench.trace import load_trace
from faas_accel.cacheapi import CacheAPI
from faas_accel.procfs import cpu_seconds
from faas_accel.testbed.cache import FAAS_ACCEL, TOKEN, Cache
from faas_accel.testbed.procs import Proc, session, stop
from faas_accel.testbed.registry import Registry
from load.replay_report import render, summary
from load.replay_workload import (
    MANIFEST,
    UPSTREAM,
    Workload,
    offsets,
    predictive_params,
    repository,
    slice_trace,
)

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "azure-functions-2019-sample"
# service variant -> (eviction policy, with the predicted prewarm schedule, simulator policy)
VARIANTS = {
    "lru": ("lru", False, "lru"),
    "lfu": ("lfu", False, "lfu"),
    "gdsf": ("gdsf", False, "gdsf"),
    "s3fifo": ("s3fifo", False, "s3fifo"),
    "predictive": ("predictive", False, "predictive-evict"),
    "predictive+prefetch": ("predictive", True, "predictive"),
}
# the cache's config on top of testbed's: tags last the whole run, timeouts for a loaded machine
CACHE_SETTINGS = {"tag_ttl": "30d", "connect_timeout": "5s", "read_timeout": "30s", "verify_on_start": "off"}


@dataclass
class Pull:
    """One replayed cold start."""

    fn: int
    minute: int
    due: float  # seconds after the replay's start
    started: float = 0.0
    hit: bool = False
    error: str | None = None


def pull_image(http: requests.Session, url: str, fn: int) -> bool:
    """Pull function `fn`'s image through the cache as a runtime does; True when every
    response came from the store. Raises on a failed request or short body."""
    base = f"{url}/v2/{UPSTREAM}/{repository(fn)}"
    resp = http.get(f"{base}/manifests/1", headers={"Accept": MANIFEST}, timeout=60)
    resp.raise_for_status()
    hit = resp.headers.get("X-Cache") == "hit"
    doc = resp.json()
    for desc in [doc["config"], *doc["layers"]]:
        blob = http.get(f"{base}/blobs/{desc['digest']}", timeout=60)
        blob.raise_for_status()
        if len(blob.content) != desc["size"]:
            raise ValueError(f"{desc['digest']}: {len(blob.content)} of {desc['size']} bytes")
        hit = hit and blob.headers.get("X-Cache") == "hit"
    return hit


def push_workload(upstream: Registry, work: Workload) -> int:
    """Push every image; returns the bytes of all blobs (layers, configs, manifests)."""
    home: dict[str, str] = {}  # layer digest -> repository it was first pushed to
    total = 0
    for fn, layers, config, manifest in work.content():
        repo = repository(fn)
        for _, blob in layers:
            upstream.push_blob(repo, blob.digest, blob.data, mount_from=home.get(blob.digest))
            if blob.digest not in home:
                home[blob.digest] = repo
                total += len(blob.data)
        upstream.push_blob(repo, config.digest, config.data)
        upstream.push_manifest(repo, "1", manifest.data, manifest.media_type)
        total += len(config.data) + len(manifest.data)
    return total


def replay(
    work: Workload, cache_url: str, minute_seconds: float, concurrency: int
) -> tuple[list[Pull], float]:
    """Replay every cold start at its time; returns the pulls and the wall start time."""
    due = offsets(work.events, minute_seconds)
    pulls = [Pull(ev.fn, ev.minute, at) for ev, at in zip(work.events, due, strict=True)]
    local = threading.local()
    t0 = time.monotonic() + 0.5

    def one(p: Pull) -> None:
        http = getattr(local, "http", None) or session()
        local.http = http
        p.started = time.monotonic() - t0
        try:
            p.hit = pull_image(http, cache_url, p.fn)
        except (requests.RequestException, ValueError, KeyError) as exc:
            p.error = str(exc)[:200]

    wall = time.time() + 0.5
    with ThreadPoolExecutor(concurrency, thread_name_prefix="pull") as pool:
        for p in pulls:
            delay = t0 + p.due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, p)
    return pulls, wall


def run_one(work: Workload, upstream_url: str, variant: str, capacity_bytes: int, *, minute_seconds: float,
            concurrency: int = 16, workers: int = 2, low_watermark: float = 0.9,
            parent: str | None = None, record: list[Pull] | None = None) -> dict[str, Any]:  # fmt: skip
    """One fresh cache with `variant`'s policy at `capacity_bytes`, the whole slice replayed;
    the scored hit ratio and what the NIC spent (`record` gets every pull)."""
    policy, prefetch, _ = VARIANTS[variant]
    eviction: dict[str, Any] = {"policy": policy}
    if policy == "predictive":
        eviction.update(predictive_params(minute_seconds))
    where = Path(tempfile.mkdtemp(prefix=f"replay-{variant.replace('+', '-')}-", dir=parent))
    settings = {**CACHE_SETTINGS, "capacity": capacity_bytes, "low_watermark": low_watermark,
                "eviction": eviction}  # fmt: skip
    cache = Cache({UPSTREAM: upstream_url}, workers=workers, threads=max(8, concurrency), extra=settings,
                  workdir=where, env={"NIC_CACHE_LOG_LEVEL": "WARNING"})  # fmt: skip
    scheduler = None
    try:
        cache.start(timeout=60)
        if prefetch:
            scheduler = start_scheduler(where, cache, _predicted_schedule(work, minute_seconds))
        pulls, wall = replay(work, cache.url, minute_seconds, concurrency)
        if record is not None:
            record.extend(pulls)
        assert cache.proc is not None
        cpu, rss = usage([cache.proc.pid, *cache.worker_pids()])
        with CacheAPI(cache.url, TOKEN, timeout=60) as api:
            metrics = api.stats()["metrics"]
            prefetched = _prefetched(api, wall + work.model.learn * minute_seconds) if prefetch else 0
        sched_cpu = usage([scheduler.pid])[0] if scheduler else 0.0
    finally:
        if scheduler is not None:
            stop(scheduler)
        cache.close()
        shutil.rmtree(where, ignore_errors=True)
    return summary(pulls, work.model.learn, metrics, cpu=cpu, rss=rss, prefetch_bytes=prefetched,
                   scheduler_cpu=sched_cpu)  # fmt: skip


def start_scheduler(where: Path, cache: Cache, schedule: dict[str, Any]) -> Proc:
    """`faas-accel prewarm run` with the one `schedule` against `cache`."""
    doc = {"cache": {"url": cache.url, "token": TOKEN}, "limits": {"concurrency": 4, "bandwidth": 0},
           "schedules": [schedule]}  # fmt: skip
    (where / "prewarm.yml").write_text(yaml.safe_dump(doc))
    return Proc([*FAAS_ACCEL, "prewarm", "run", "--config", where / "prewarm.yml"], where / "prewarm.log")


def usage(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds, summed peak RSS bytes) of the live `pids`; the first one's reaped children
    count in its CPU time (a worker gunicorn replaced)."""
    cpu, peak = 0.0, 0
    for i, pid in enumerate(pids):
        used = cpu_seconds(pid, reaped=i == 0)
        if used is not None:
            cpu += used
            peak += memory(pid).get("VmHWM", 0) * 1024
    return cpu, peak


def _predicted_schedule(work: Workload, minute_seconds: float) -> dict[str, Any]:
    """Every second (the scheduler's shortest interval), up to the simulator's prefetch budget
    for that many trace minutes, windows opening within that time plus the policy's lead."""
    minutes = 1.0 / minute_seconds
    budget = int(work.model.prefetch_budget * minutes)
    horizon = 1.0 + predictive_params(minute_seconds)["lead"]
    return {"name": "predicted", "interval": "1s", "source": {"predicted": {"budget": budget,
            "horizon": f"{horizon:.3f}s"}}}  # fmt: skip


def _prefetched(api: CacheAPI, since: float) -> int:
    runs = api.runs("predicted", limit=100_000)
    return sum(int((r.get("result") or {}).get("bytes_fetched") or 0) for r in runs
               if float(r.get("started") or 0) >= since)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the replay; print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--start", type=int, default=480, help="first trace minute of the slice")
    ap.add_argument("--minutes", type=int, default=480, help="slice length; the first half teaches")
    ap.add_argument("--minute-seconds", type=float, default=0.5, help="wall seconds per trace minute")
    ap.add_argument("--scale", type=float, default=1000.0, help="sizes divided by this")
    ap.add_argument("--capacity", default="0.1,0.3", help="shares of all bytes, comma-separated")
    ap.add_argument("--policies", default="lru,gdsf,predictive,predictive+prefetch",
                    help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--concurrency", type=int, default=16, help="pulls in flight at most")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers of the cache")
    ap.add_argument("--low-watermark", type=float, default=0.9)
    ap.add_argument("--data-dir", default=None, help="parent of the servers' temp directories")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--save", default=None, help="also write PREFIX.txt and PREFIX.json")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.policies.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown policy {unknown[0]!r} (known: {', '.join(VARIANTS)})")
    capacities = [float(c) for c in args.capacity.split(",")]
    started = time.monotonic()
    trace = slice_trace(load_trace(args.trace), args.start, args.minutes)
    work = Workload.build(trace, ImageModel(learn=args.minutes // 2), args.scale)
    results: dict[str, Any] = {"setup": {**{k: v for k, v in vars(args).items() if k not in ("json", "save")},
                                         "trace": str(args.trace)}, "capacities": {}}  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="replay-upstream-", dir=args.data_dir))
    upstream = Registry(workdir=home)
    try:
        upstream.start(timeout=20)
        total = push_workload(upstream, work)
        results["workload"] = _describe(work, total, time.monotonic() - started)
        _progress(f"pushed {len(work.images.keys)} images, {total / 1e6:.1f} MB")
        for cap in capacities:
            row: dict[str, Any] = {}
            sim_names = sorted({VARIANTS[v][2] for v in variants} | {"belady"})
            sim = work.simulate(cap, sim_names)
            for v in variants:
                got = run_one(work, upstream.url, v, int(cap * total), minute_seconds=args.minute_seconds,
                              concurrency=args.concurrency, workers=args.workers,
                              low_watermark=args.low_watermark, parent=args.data_dir)  # fmt: skip
                got["simulator_hit_ratio"] = sim[VARIANTS[v][2]]
                row[v] = got
                _progress(f"capacity {cap:g} {v}: service {got['hit_ratio']:.3f}, simulator "
                          f"{got['simulator_hit_ratio']:.3f} ({got['cpu_seconds']:.0f} CPU s)")  # fmt: skip
            row["belady (simulator)"] = {"simulator_hit_ratio": sim["belady"]}
            results["capacities"][f"{cap:g}"] = row
    finally:
        upstream.close()
        shutil.rmtree(home, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    text = render(results)
    print(json.dumps(results, indent=2) if args.json else text)
    if args.save:
        Path(f"{args.save}.txt").write_text(text + "\n")
        Path(f"{args.save}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _describe(work: Workload, total: int, seconds: float) -> dict[str, Any]:
    learn = work.model.learn
    return {"model": asdict(work.model), "scale": work.scale, "functions": len(work.trace.functions),
            "minutes": work.trace.minutes, "bytes": total, "layer_bytes": work.images.total,
            "cold_starts": len(work.events), "push_seconds": round(seconds, 1),
            "scored_cold_starts": sum(e.minute >= learn for e in work.events)}  # fmt: skip


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
