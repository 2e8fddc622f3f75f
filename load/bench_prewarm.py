"""Replay a synthetic day of deploys against the NIC cache, prewarm on vs off.

The workload: 50 function images whose sizes are drawn log-normal (median 60 MB, clipped to
8-600 MB, then scaled by --scale), each a shared base layer (python, node, debian, alpine)
plus its own layer. Deploys follow a daily curve (trough at 02:00, peak at 14:00) and pick
their image by Zipf (s = 1.1, ranks shuffled). Each deploy lands on one of 8 VMs whose own
image store keeps its 4 most recent images; a deploy of an image the VM lacks is a *first
pull*, and goes through the cache (a runtime-like client: manifest by tag, then every blob).
The hook's deploy event is reported for every deploy.

The cache runs as users run it (gunicorn, 4 workers) with capacity for 30% of the bytes of
all 50 images; the upstream is a CNCF registry behind one shared rate limit standing in for
the WAN link (live misses and prewarm fills share it; the prewarm budget is 40% of it).

Two simulated days are replayed, time compressed (--day-seconds each): day 0 builds the pull
log and the cache content, day 1 is measured. With prewarm on, a `faas-accel prewarm run`
process fills the --top images by decayed popularity (half-life 12 simulated hours, window 2
days) every simulated hour; in mode `prewarm-pin` the schedule also pins them (and releases
what falls out of the top).

A first pull is a *hit* when every blob of its image is stored when the pull starts. Both
modes replay the same trace, so they make the same first pulls::

    .venv/bin/python -m load.bench_prewarm                  # 2 days of 120 s, each mode
    .venv/bin/python -m load.bench_prewarm --quick          # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import random
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests

from faas_accel.cacheapi import CacheAPI
from faas_accel.testbed import oci
from faas_accel.testbed.cache import TOKEN, Cache
from faas_accel.testbed.procs import Proc, session, stop
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.tcpproxy import TcpProxy
from nic_cache.policy import LRU

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = "registry.lab"
DAY = 86400.0
MB = 1_000_000
BASES = {"python": 30 * MB, "node": 40 * MB, "debian": 28 * MB, "alpine": 3 * MB}
VMS, VM_IMAGES = 8, 4


class SharedLink(TcpProxy):
    """A TcpProxy whose server-to-client bytes all share one link of `link_rate` bytes/s."""

    def __init__(self, target: tuple[str, int], link_rate: float) -> None:
        self.link_rate = link_rate
        self._link = threading.Lock()
        self._free_at = time.monotonic()  # when the link has sent everything queued so far
        super().__init__(target)

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        try:
            while data := src.recv(16384):
                if down:
                    with self._link:
                        now = time.monotonic()
                        self._free_at = max(self._free_at, now) + len(data) / self.link_rate
                        wait = self._free_at - now
                    if wait > 0.005:
                        time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Function:
    """One function image: its name, bytes, and blob digests once built."""

    name: str
    size: int
    base: str
    image: oci.Image

    @property
    def ref(self) -> str:
        return f"{UPSTREAM}/bench/{self.name}:1"


@dataclass(frozen=True)
class Deploy:
    """A deploy at `t` seconds into its simulated day of function `fn` onto VM `vm`."""

    day: int
    t: float
    fn: int
    vm: int
    first_pull: bool  # the VM lacks the image: it pulls through the cache


@dataclass
class Outcome:
    """What one mode measured on the measured day."""

    mode: str
    deploys: int = 0
    first_pulls: int = 0
    hits: int = 0
    day_first: int = 0  # the first pull of each image that day
    day_first_hits: int = 0
    pull_seconds_hit: list[float] = field(default_factory=list)
    pull_seconds_miss: list[float] = field(default_factory=list)
    failed_pulls: int = 0  # pulls that broke off (retried once, as a runtime would)
    upstream_bytes: int = 0
    prewarm_runs: int = 0
    prewarm_bytes: int = 0
    late: float = 0.0  # worst lag of the replay behind its schedule, seconds

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("pull_seconds_hit", "pull_seconds_miss"):
            values = out.pop(key)
            out[key.replace("pull_seconds", "mean_pull_s")] = (
                round(statistics.fmean(values), 3) if values else None
            )
        out["hit_ratio"] = round(self.hits / self.first_pulls, 3) if self.first_pulls else None
        out["day_first_hit_ratio"] = (
            round(self.day_first_hits / self.day_first, 3) if self.day_first else None
        )
        return out


def build_functions(rng: random.Random, n: int, scale: float) -> list[tuple[str, int, str]]:
    """(name, bytes, base) of each function, realistic sizes scaled by `scale`."""
    out = []
    for i in range(n):
        size = int(min(max(rng.lognormvariate(math.log(60 * MB), 0.8), 8 * MB), 600 * MB) * scale)
        base = rng.choice(list(BASES))
        out.append((f"fn{i:02d}", max(size, int(BASES[base] * scale) + 64 * 1024), base))
    return out


def publish(registry: Registry, specs: list[tuple[str, int, str]], scale: float) -> list[Function]:
    """Push every function image (shared base layers, own layer) to the upstream."""
    bases = {
        name: oci.random_layer(int(size * scale), seed=hash(name) % 10_000) for name, size in BASES.items()
    }
    functions = []
    for i, (name, size, base) in enumerate(specs):
        own = oci.random_layer(size - bases[base].size, seed=10_000 + i)
        image = oci.image([bases[base], own])
        oci.publish(image, f"{registry.host}/bench/{name}:1")
        functions.append(
            Function(name, image.size + sum(b.size for b in (image.config, *image.layers)), base, image)
        )
    return functions


def intensity(t: float) -> float:
    """Relative deploy rate at `t` seconds into the day: 0.2 at 02:00, 1.8 at 14:00."""
    return 1.0 - 0.8 * math.cos(2 * math.pi * (t / 3600 - 2) / 24)


def trace(rng: random.Random, days: int, per_day: int, n: int, zipf_s: float) -> list[Deploy]:
    """Deploys of `days` days (thinning against `intensity`), with each VM's first pulls."""
    weights = [1 / (rank + 1) ** zipf_s for rank in range(n)]
    order = list(range(n))
    rng.shuffle(order)  # which function has which popularity rank
    vms = [LRU() for _ in range(VMS)]  # each VM's image store, one unit per image
    deploys = []
    for day in range(days):
        times: list[float] = []
        while len(times) < per_day:
            t = rng.uniform(0, DAY)
            if rng.uniform(0, 1.8) < intensity(t):
                times.append(t)
        for t in sorted(times):
            fn = order[rng.choices(range(n), weights)[0]]
            vm = rng.randrange(VMS)
            local, key = vms[vm], str(fn)
            first = key not in local.sizes
            if first:
                local.on_insert(key, 1, t)
            else:
                local.on_access(key, t)
            for gone in local.victims(len(local.sizes) - VM_IMAGES, t):
                local.on_remove(gone)
            deploys.append(Deploy(day, t, fn, vm, first))
    return deploys


def stored(cache: Cache, fn: Function) -> bool:
    root = cache.data_dir / "blobs" / "sha256"
    return all((root / d[7:9] / d[7:]).exists() for d in fn.image.blob_digests)


def pull(session: requests.Session, cache: Cache, fn: Function) -> None:
    """Pull like a runtime: the manifest by tag, then every blob (checked)."""
    base = f"{cache.url}/v2/{UPSTREAM}/bench/{fn.name}"
    doc = session.get(f"{base}/manifests/1", headers={"Accept": oci.OCI_MANIFEST}, timeout=300).json()
    for d in [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]:
        resp = session.get(f"{base}/blobs/{d}", timeout=300)
        if resp.status_code != 200 or oci.sha256_digest(resp.content) != d:
            raise RuntimeError(f"pull of {fn.ref}: blob {d} came back wrong ({resp.status_code})")


def replay(cache: Cache, functions: list[Function], deploys: list[Deploy], day_seconds: float,
           outcome: Outcome | None) -> float:  # fmt: skip
    """Replay one day's deploys at compressed time; measure into `outcome` if given."""
    scale = day_seconds / DAY
    local = threading.local()
    lock = threading.Lock()
    seen: set[int] = set()
    late = 0.0

    def one(d: Deploy) -> None:
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = session()
            local.api = CacheAPI(cache.url, TOKEN, timeout=30)
        fn = functions[d.fn]
        local.api.report_deploy(fn.ref, fn.name, vm=f"vm{d.vm}")
        if not d.first_pull:
            return
        hit = stored(cache, fn)
        t0 = time.monotonic()
        try:
            pull(http, cache, fn)
            failed = 0
        except (requests.RequestException, RuntimeError) as exc:
            print(f"  pull of {fn.ref} failed, retrying: {exc}", flush=True)
            failed = 1
            pull(http, cache, fn)
        took = time.monotonic() - t0
        if outcome is None:
            return
        with lock:
            outcome.failed_pulls += failed
            outcome.first_pulls += 1
            outcome.hits += hit
            (outcome.pull_seconds_hit if hit else outcome.pull_seconds_miss).append(took)
            if d.fn not in seen:
                seen.add(d.fn)
                outcome.day_first += 1
                outcome.day_first_hits += hit

    start = time.monotonic()
    with ThreadPoolExecutor(VMS * 2) as pool:
        futures = []
        for d in deploys:
            delay = start + d.t * scale - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            late = max(late, -delay)
            futures.append(pool.submit(one, d))
            if outcome is not None:
                outcome.deploys += 1
        for fut in futures:
            fut.result()
    rest = start + day_seconds - time.monotonic()
    if rest > 0:
        time.sleep(rest)
    return late


def prewarm_file(path: Path, cache: Cache, day_seconds: float, top: int, bandwidth: int, pin: bool) -> Path:
    hour = day_seconds / 24
    path.write_text(
        f"cache: {{url: '{cache.url}', token: {TOKEN}}}\n"
        f"limits: {{concurrency: 2, bandwidth: {bandwidth}}}\n"
        "schedules:\n"
        "  - name: hourly-top\n"
        f"    interval: {hour:g}s\n"
        f"    pin: {str(pin).lower()}\n"
        f"    source: {{popular: {{top: {top}, window: {2 * day_seconds:g}s, min_pulls: 2, "
        f"half_life: {day_seconds / 2:g}s}}}}\n"
    )
    return path


def run_mode(mode: str, args: argparse.Namespace, registry: Registry, wan: SharedLink,
             functions: list[Function], deploys: list[Deploy], capacity: int,
             workdir: Path) -> Outcome:  # fmt: skip
    outcome = Outcome(mode)
    cache = Cache({UPSTREAM: wan.url}, workers=4,
                  extra={"capacity": capacity, "low_watermark": 0.9, "read_timeout": "60s"})  # fmt: skip
    scheduler: Proc | None = None
    try:
        cache.start()
        if mode.startswith("prewarm"):
            budget = int(args.wan * MB * 8 * 0.4)  # bits/s: 40% of the link
            pin = mode == "prewarm-pin"
            config = prewarm_file(workdir / f"{mode}.yml", cache, args.day_seconds, args.top, budget, pin)
            scheduler = Proc([sys.executable, "-m", "faas_accel.prewarm.cli", "run", "--config", str(config)],
                             workdir / f"{mode}.log")  # fmt: skip
        print(f"[{mode}] day 0 (warm-up) ...", flush=True)
        replay(cache, functions, [d for d in deploys if d.day == 0], args.day_seconds, None)
        before = registry.blob_bytes()
        print(f"[{mode}] day 1 (measured) ...", flush=True)
        t_day = time.time()
        outcome.late = round(replay(cache, functions, [d for d in deploys if d.day == 1], args.day_seconds,
                                    outcome), 3)  # fmt: skip
        cache.wait_idle(120)
        outcome.upstream_bytes = registry.blob_bytes() - before
        if scheduler is not None:
            with CacheAPI(cache.url, TOKEN, timeout=30) as api:
                runs = api.runs(limit=1000)
            day = [r for r in runs if r["started"] >= t_day and r["result"]]
            outcome.prewarm_runs = len(day)
            outcome.prewarm_bytes = sum(r["result"]["bytes_fetched"] for r in day)
    finally:
        if scheduler is not None:
            stop(scheduler)
        cache.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=50, help="function images (default 50)")
    parser.add_argument("--deploys", type=int, default=800, help="deploys per simulated day (default 800)")
    parser.add_argument("--day-seconds", type=float, default=120.0, help="real seconds per simulated day")
    parser.add_argument("--scale", type=float, default=0.05, help="image size scale (default 0.05: 1/20)")
    parser.add_argument("--capacity", type=float, default=0.30, help="cache capacity, fraction of all images")
    parser.add_argument("--top", type=int, default=10, help="images the prewarm schedule fills (default 10)")
    parser.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent (default 1.1)")
    parser.add_argument("--wan", type=float, default=12.5, help="WAN link, MB/s (default 12.5: 100 Mbit)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of sizes and trace")
    parser.add_argument("--modes", default="lru,prewarm,prewarm-pin",
                        help="modes to run (default lru,prewarm,prewarm-pin)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 images, 200 deploys, 40 s days")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.deploys, args.day_seconds, args.top = 20, 200, 40.0, 4
    rng = random.Random(args.seed)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = REPO_ROOT / "results" / f"bench-prewarm-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    registry = Registry().start()
    wan = SharedLink(("127.0.0.1", registry.port), args.wan * MB)
    try:
        print(f"pushing {args.images} images ...", flush=True)
        functions = publish(registry, build_functions(rng, args.images, args.scale), args.scale)
        unique = {b.digest: b.size for f in functions for b in (f.image, f.image.config, *f.image.layers)}
        capacity = int(sum(unique.values()) * args.capacity)
        deploys = trace(rng, 2, args.deploys, args.images, args.zipf)
        outcomes = [run_mode(m, args, registry, wan, functions, deploys, capacity, workdir)
                    for m in args.modes.split(",")]  # fmt: skip
    finally:
        wan.close()
        registry.close()
    setup = {
        "images": args.images, "bytes_all_images": sum(unique.values()), "capacity": capacity,
        "sizes_mb": sorted(round(f.size / MB, 2) for f in functions), "deploys_per_day": args.deploys,
        "day_seconds": args.day_seconds, "scale": args.scale, "top": args.top, "zipf": args.zipf,
        "wan_mb_s": args.wan, "vms": VMS, "vm_images": VM_IMAGES, "seed": args.seed,
    }  # fmt: skip
    result = {"setup": setup, "outcomes": [o.summary() for o in outcomes]}
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(setup))
    print(f"\n{'mode':<11} {'first pulls':>11} {'hit ratio':>9} {'day-first hit':>13} {'mean hit s':>10} "
          f"{'mean miss s':>11} {'upstream MB':>11} {'prewarm MB':>10}")  # fmt: skip
    for o in result["outcomes"]:
        print(f"{o['mode']:<11} {o['first_pulls']:>11} {o['hit_ratio']:>9} {o['day_first_hit_ratio']:>13} "
              f"{o['mean_pull_s_hit']!s:>10} {o['mean_pull_s_miss']!s:>11} {o['upstream_bytes'] / MB:>11.1f} "
              f"{o['prewarm_bytes'] / MB:>10.1f}")  # fmt: skip
    print(f"\nresults in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
