"""Cold and warm pulls through nic_cache and through CNCF distribution's proxy, in one run.

The upstream registry lives in its own network namespace behind a veth shaped with `tc tbf`
in both directions; the mirror under test sits in the "nic" namespace between the upstream
and a "vm" namespace where skopeo clients run::

    up (registry 198.18.0.1:5000) <--tbf--> nic (nic_cache :5000, distribution :5001) <--> vm (skopeo)

For each N, N clients pull the same uncached single-layer image of random bytes at once
through a mirror with empty storage; we time the last one and count what crossed the
uplink on the upstream-side veth. One client then pulls it again (warm hit). `T_fetch` is
the same pull straight from the upstream, routed through the nic namespace over the same
shaped link. Run as root::

    .venv/bin/python -m load.bench_mirror            # 100 MB, N = 1,4,8, 200mbit
    .venv/bin/python -m load.bench_mirror --quick    # 20 MB, N = 1,2: a smoke run
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import datetime
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from faas_accel.lab.netns import NetLab, stale_namespaces
from faas_accel.testbed import oci
from faas_accel.testbed.procs import ProcessFailed, tail
from load.mirror_rig import (
    MIRRORS,
    NS_BASE,
    REGISTRY_PORT,
    REPO,
    REPO_ROOT,
    REQUIRED_PROGRAMS,
    TAG,
    UP_IP,
    Clients,
    DistributionMirror,
    Mirror,
    NicCacheMirror,
    NsRegistry,
    Topology,
    build_topology,
    seed_upstream,
)
from nic_cache.units import parse_rate, parse_size

# -- measurements -----------------------------------------------------------------------


@dataclass
class Sample:
    """One measurement, one CSV row."""

    kind: str  # "direct", "cold" or "warm"
    mirror: str  # "none" for direct pulls
    n: int  # clients pulling at once
    cold_n: int  # N of the cold run that filled the mirror (0 for direct pulls)
    rep: int
    seconds: float  # start -> last client done
    client_seconds: str  # each client's time, ";"-separated
    uplink_tx_bytes: int  # sent by the upstream's veth (the image's direction)
    uplink_rx_bytes: int
    upstream_layer_gets: int  # successful GETs of the layer in the upstream's log
    upstream_blob_body_bytes: int  # blob body bytes the upstream wrote
    mirror_upstream_bytes: float | None  # nic_cache_upstream_bytes_total, since the mirror started
    image_bytes: int
    rate: str


@dataclass
class Bench:
    """Everything one run needs; `samples` fills as it goes."""

    topo: Topology
    upstream: NsRegistry
    clients: Clients
    image: oci.Image
    rate: str
    repeat: int
    workdir: Path
    log_dir: Path
    samples: list[Sample] = field(default_factory=list)

    @property
    def image_bytes(self) -> int:
        return sum(blob.size for blob in self.image.blobs())

    def timeout(self, n: int) -> float:
        """Generous: four times the wire time of n copies, plus a minute."""
        return 60 + 4 * n * self.image_bytes * 8 / parse_rate(self.rate)

    def measure(
        self, kind: str, mirror: Mirror | None, ref: str, n: int, rep: int, cold_n: int = 0
    ) -> Sample:
        layer = self.image.layers[0].digest
        gets0, body0 = self.upstream.layer_stats(layer)
        tx0, rx0 = self.topo.settled_uplink()
        times = self.clients.pull_together(ref, n, self.image, self.timeout(n))
        tx1, rx1 = self.topo.settled_uplink()
        gets1, body1 = self.upstream.layer_stats(layer)
        sample = Sample(
            kind=kind,
            mirror=mirror.name if mirror else "none",
            n=n,
            cold_n=cold_n,
            rep=rep,
            seconds=round(max(times), 3),
            client_seconds=";".join(f"{t:.3f}" for t in times),
            uplink_tx_bytes=tx1 - tx0,
            uplink_rx_bytes=rx1 - rx0,
            upstream_layer_gets=gets1 - gets0,
            upstream_blob_body_bytes=body1 - body0,
            mirror_upstream_bytes=mirror.upstream_bytes() if mirror else None,
            image_bytes=self.image_bytes,
            rate=self.rate,
        )
        self.samples.append(sample)
        say(
            f"  {kind:<6} {sample.mirror:<12} N={n} rep {rep}: last {sample.seconds:6.2f} s, "
            f"uplink {sample.uplink_tx_bytes / 1e6:7.1f} MB, layer GETs upstream {sample.upstream_layer_gets}"
        )
        return sample

    def direct(self) -> None:
        say(f"T_fetch: one client straight from the upstream, {self.repeat}x")
        for rep in range(1, self.repeat + 1):
            self.measure("direct", None, self.topo.direct_ref, 1, rep)

    def through(self, which: str, n: int) -> None:
        """Cold pulls by n clients on an empty mirror, then warm single pulls."""
        run_dir = self.workdir / f"{which}-n{n}"
        log = self.log_dir / f"{which}-n{n}.log"
        mirror: Mirror = (
            NicCacheMirror(self.topo, run_dir, log)
            if which == "nic_cache"
            else DistributionMirror(self.topo, run_dir, log)
        )
        say(f"{which}: {n} cold client(s), then {self.repeat} warm pull(s)  [log {log}]")
        try:
            mirror.start()
            self.measure("cold", mirror, mirror.ref(), n, 1, cold_n=n)
            for rep in range(1, self.repeat + 1):
                self.measure("warm", mirror, mirror.ref(), 1, rep, cold_n=n)
        except ProcessFailed as exc:
            raise ProcessFailed(f"{exc}\n--- last lines of the {which} log {log} ---\n{tail(log)}") from exc
        finally:
            mirror.close()


# -- report -----------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(bench: Bench, args: argparse.Namespace, elapsed: float, load_before: float) -> str:
    """The human table: ratios against the image size, one direct pull, and T_fetch."""
    samples, image_bytes = bench.samples, bench.image_bytes
    direct = [s for s in samples if s.kind == "direct"]
    t_fetch = _median([s.seconds for s in direct])
    direct_tx = _median([s.uplink_tx_bytes for s in direct])
    lines = [
        f"bench-mirror: {image_bytes / 1e6:.1f} MB image (1 random layer, {image_bytes} bytes in "
        f"{len(list(bench.image.blobs()))} blobs), uplink {args.rate} tbf both ways, "
        f"median of {args.repeat}, {os.cpu_count()} CPUs, {elapsed:.0f} s in all",
        f"load average (1 min) at start {load_before:.2f}, at end {os.getloadavg()[0]:.2f}"
        " (anything else running skews the times)",
        f"T_fetch (direct pull): {t_fetch:.2f} s  [{' '.join(f'{s.seconds:.2f}' for s in direct)}], "
        f"{direct_tx / 1e6:.1f} MB on the uplink = {direct_tx / image_bytes:.3f}x the image "
        "(TCP/IP/Ethernet overhead)",
        "",
        f"{'mirror':<13}{'N':>3}{'last s':>9}{'last/T_fetch':>14}{'uplink MB':>11}{'up/image':>10}"
        f"{'up/direct':>11}{'layer GETs':>12}{'warm s':>9}",
    ]
    verdict: dict[str, dict[str, float]] = {}
    for which in MIRRORS:
        for n in args.clients:
            cold = [s for s in samples if (s.kind, s.mirror, s.n) == ("cold", which, n)]
            warm = [s for s in samples if (s.kind, s.mirror, s.cold_n) == ("warm", which, n)]
            if not cold:
                continue
            c = cold[0]
            warm_s = _median([s.seconds for s in warm])
            row = {
                "last_ratio": c.seconds / t_fetch,
                "up_image": c.uplink_tx_bytes / image_bytes,
                "up_direct": c.uplink_tx_bytes / direct_tx,
                "gets": c.upstream_layer_gets,
            }
            v = verdict.setdefault(which, {"last_ratio": 0.0, "up_direct": 0.0, "gets": 0})
            for key in ("last_ratio", "up_direct", "gets"):
                v[key] = max(v[key], row[key])
            lines.append(
                f"{which:<13}{n:>3}{c.seconds:>9.2f}{row['last_ratio']:>13.2f}x"
                f"{c.uplink_tx_bytes / 1e6:>11.1f}{row['up_image']:>9.2f}x{row['up_direct']:>10.2f}x"
                f"{c.upstream_layer_gets:>12}{warm_s:>9.2f}"
            )
    warm_all = {
        which: _median([s.seconds for s in samples if s.kind == "warm" and s.mirror == which])
        for which in MIRRORS
    }
    lines += [
        "",
        "warm hit, one client (median of all warm pulls): "
        + ", ".join(f"{w} {warm_all[w]:.2f} s" for w in MIRRORS),
        "up/image counts link bytes (headers included); up/direct divides by one direct pull's link "
        "bytes, so 1.00x there means one copy of the image crossed the uplink.",
    ]
    if "nic_cache" in verdict:
        v = verdict["nic_cache"]
        checks = [
            (
                "one copy upstream at every N (up/direct <= 1.02x, 1 layer GET)",
                v["up_direct"] <= 1.02 and v["gets"] <= 1,
                f"max {v['up_direct']:.2f}x, {v['gets']:.0f} GETs",
            ),
            ("last of N within 1.15x T_fetch", v["last_ratio"] <= 1.15, f"max {v['last_ratio']:.2f}x"),
            (
                "warm hit no slower than distribution",
                warm_all["nic_cache"] <= warm_all["distribution"],
                f"{warm_all['nic_cache']:.2f} s vs {warm_all['distribution']:.2f} s",
            ),
        ]
        lines.append("nic_cache targets:")
        lines += [f"  {'ok  ' if ok else 'MISS'} {what}: {detail}" for what, ok, detail in checks]
    return "\n".join(lines)


def write_csv(path: Path, samples: list[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        for sample in samples:
            writer.writerow(asdict(sample))


# -- main -------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m load.bench_mirror",
        description="nic_cache vs CNCF distribution (proxy mode) behind a shaped uplink, in one run.",
    )
    parser.add_argument("--rate", default="200mbit", help="uplink rate, both directions (default 200mbit)")
    parser.add_argument(
        "--size", default=None, help="layer size, e.g. 100MB (default 100MB; 20MB with --quick)"
    )
    parser.add_argument(
        "--clients", default=None, help="comma-separated N values (default 1,4,8; 1,2 with --quick)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="direct and warm pulls per point (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20MB image, clients 1,2")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="CSV path (default results/bench-mirror-<date>.csv in the repository)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="keep server and client logs here (default: a temp dir, removed at the end)",
    )
    args = parser.parse_args(argv)
    args.size = parse_size(args.size or ("20MB" if args.quick else "100MB"))
    args.clients = [int(n) for n in (args.clients or ("1,2" if args.quick else "1,4,8")).split(",")]
    if any(n < 1 for n in args.clients) or args.repeat < 1:
        parser.error("--clients and --repeat take positive numbers")
    parse_rate(args.rate)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out = args.out or REPO_ROOT / "results" / f"bench-mirror-{stamp}.csv"
    return args


def preflight() -> None:
    """Exit with a clear message unless we are root with every program we drive."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (it creates network namespaces and tc qdiscs)")
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        problems.append(
            f"missing program(s) on PATH: {', '.join(missing)} "
            "(Debian: skopeo docker-registry iproute2 util-linux procps)"
        )
    if problems:
        sys.exit("bench_mirror: " + "; ".join(problems))
    for name in stale_namespaces(NS_BASE):
        say(f"note: namespace {name} is left over from a run that died; `ip netns delete {name}`")


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit so cleanup runs as it does for Ctrl-C."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-mirror-{os.getpid()}-"))
    log_dir = args.log_dir or workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    lab = NetLab(f"{NS_BASE}-{os.getpid()}")
    stack = contextlib.ExitStack()
    atexit.register(stack.close)  # a second chance if something skips the finally below
    with exit_on_signals():
        try:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            stack.callback(lab.close)
            stack.callback(_warn_leftovers, lab)
            say(f"building namespaces {lab.prefix}-{{up,nic,vm}}, uplink {args.rate} each way")
            topo = build_topology(lab, args.rate)
            upstream = NsRegistry(topo.up, f"{UP_IP}:{REGISTRY_PORT}", workdir=workdir / "upstream")
            upstream.log = log_dir / "upstream.log"
            stack.callback(upstream.stop)
            upstream.start()
            image = oci.image([oci.random_layer(args.size, seed=args.size)])
            say(f"seeding {REPO}:{TAG} ({image.layers[0].size} byte layer) into the upstream")
            seed_upstream(topo, upstream, image, workdir)
            clients = Clients(topo, workdir, log_dir)
            stack.callback(clients.close)
            bench = Bench(topo, upstream, clients, image, args.rate, args.repeat, workdir, log_dir)
            bench.direct()
            for n in args.clients:
                for which in MIRRORS:
                    bench.through(which, n)
            write_csv(args.out, bench.samples)
            say("")
            say(report(bench, args, time.monotonic() - started, load_before))
            say(f"\nCSV: {args.out}" + (f"\nlogs: {log_dir}" if args.log_dir else ""))
            return 0
        except (RuntimeError, subprocess.CalledProcessError, TimeoutError) as exc:
            say(f"bench_mirror failed: {exc}")
            return 1
        except KeyboardInterrupt:
            say("bench_mirror interrupted: stopping servers and deleting namespaces")
            return 130
        except SystemExit:
            say("bench_mirror terminated: stopping servers and deleting namespaces")
            raise
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
            try:
                stack.close()
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)


def _warn_leftovers(lab: NetLab) -> None:
    for ns, pids in lab.leftover_pids().items():
        say(f"warning: processes {pids} still live in {ns}; deleting it anyway")


if __name__ == "__main__":
    sys.exit(main())
