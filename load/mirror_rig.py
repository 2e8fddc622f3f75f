"""The rig of load/bench_mirror.py: three namespaces, the upstream registry, the two mirrors
under test and the skopeo clients.

    up (registry 198.18.0.1:5000) <--tbf--> nic (nic_cache :5000, distribution :5001) <--> vm (skopeo)
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from faas_accel.cacheapi import BadAnswer, CacheAPI, Refused
from faas_accel.lab import netns
from faas_accel.lab.netns import NetLab, http_answers, nsenter
from faas_accel.testbed import oci
from faas_accel.testbed.procs import Proc, run, stop
from faas_accel.testbed.registry import Registry

REPO_ROOT = Path(__file__).resolve().parents[1]
NS_BASE = "fab"  # namespaces are fab-<pid>-up, fab-<pid>-nic, fab-<pid>-vm

UP_IP, NIC_UPLINK_IP, NIC_IP, VM_IP = "198.18.0.1", "198.18.0.2", "198.18.1.1", "198.18.1.10"
UP_DEV, UPLINK_DEV, NIC_VM_DEV, VM_DEV = "up0", "nic0", "nic1", "vm0"
REGISTRY_PORT, CACHE_PORT, DISTRIBUTION_PORT = 5000, 5000, 5001
UPSTREAM_NAME = "registry.lab"  # the upstream's name in rewritten references
REPO, TAG = "bench/random", "1"
ADMIN_TOKEN = "bench-mirror"
REQUIRED_PROGRAMS = ("skopeo", "docker-registry", "ip", "tc", "nsenter", "sysctl")
MIRRORS = ("nic_cache", "distribution")


# -- the network ------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """The three namespaces and the device whose counters are the upstream's traffic."""

    lab: NetLab
    up: str
    nic: str
    vm: str

    @property
    def direct_ref(self) -> str:
        return f"{UP_IP}:{REGISTRY_PORT}/{REPO}:{TAG}"

    def uplink(self) -> tuple[int, int]:
        """(bytes sent by the upstream, bytes it received) so far, on its own veth."""
        c = netns.counters(self.up, UP_DEV)
        return c.tx_bytes, c.rx_bytes

    def settled_uplink(self, quiet: float = 0.5, timeout: float = 30.0) -> tuple[int, int]:
        """Uplink counters once nothing has crossed for `quiet` seconds (mirrors may trail)."""
        last = self.uplink()
        still_since = time.monotonic()
        deadline = still_since + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.uplink()
            if now != last:
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet:
                break
        return last


def build_topology(lab: NetLab, rate: str) -> Topology:
    """up <-tbf-> nic <-> vm, with nic forwarding so vm can reach up directly."""
    up, nic, vm = lab.namespace("up"), lab.namespace("nic"), lab.namespace("vm")
    netns.veth(up, UP_DEV, nic, UPLINK_DEV)
    netns.address(up, UP_DEV, f"{UP_IP}/30")
    netns.address(nic, UPLINK_DEV, f"{NIC_UPLINK_IP}/30")
    netns.shape(up, UP_DEV, rate)
    netns.shape(nic, UPLINK_DEV, rate)
    netns.veth(nic, NIC_VM_DEV, vm, VM_DEV)
    netns.address(nic, NIC_VM_DEV, f"{NIC_IP}/24")
    netns.address(vm, VM_DEV, f"{VM_IP}/24")
    netns.forward(nic)
    netns.route(up, "198.18.1.0/24", NIC_UPLINK_IP)
    netns.route(vm, "default", NIC_IP)
    return Topology(lab, up, nic, vm)


# -- servers ----------------------------------------------------------------------------


class NsRegistry(Registry):
    """The testbed's distribution registry, listening on `addr` inside namespace `ns`."""

    def __init__(self, ns: str, addr: str, *, proxy: str | None = None, workdir: Path) -> None:
        self.ns, self.addr = ns, addr
        super().__init__(proxy=proxy, workdir=workdir)
        self.host, self.url = addr, f"http://{addr}"
        self.port = int(addr.rpartition(":")[2])

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["http"]["addr"] = self.addr
        return cfg

    def start(self, timeout: float = 30.0) -> NsRegistry:
        if self.proc is None or not self.proc.running():
            self.proc = Proc(nsenter(self.ns, ["docker-registry", "serve", str(self.config_path)]), self.log)
            self.proc.wait_until(
                lambda: http_answers(self.ns, self.url + "/v2/"), timeout, f"{self.url}/v2/ answering"
            )
        return self

    def layer_stats(self, digest: str) -> tuple[int, int]:
        """(successful GETs of `digest`, body bytes written for all blob GETs) so far."""
        return self.blob_gets(digest)[digest], self.blob_bytes()


class Mirror(Protocol):
    """A pull-through mirror in the nic namespace, with empty storage when started."""

    name: str
    log: Path

    def ref(self) -> str:
        """The reference a client pulls the benchmark image by."""
        ...

    def start(self) -> None: ...

    def upstream_bytes(self) -> float | None:
        """What the mirror itself says it fetched from upstream, if it says."""
        ...

    def close(self) -> None:
        """Stop it and delete its storage (keep the log)."""
        ...


class NicCacheMirror:
    """`faas-accel cache serve` in the nic namespace on a fresh data dir."""

    name = "nic_cache"

    def __init__(self, topo: Topology, workdir: Path, log: Path) -> None:
        self.topo, self.workdir, self.log = topo, workdir, log
        self.url = f"http://{NIC_IP}:{CACHE_PORT}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "nic-cache.yml"
        config = {
            "listen": f"{NIC_IP}:{CACHE_PORT}",
            "data_dir": str(workdir / "data"),
            "capacity": "10GiB",
            "admin_token": ADMIN_TOKEN,
            "default_upstream": UPSTREAM_NAME,
            "upstreams": {UPSTREAM_NAME: {"url": f"http://{UP_IP}:{REGISTRY_PORT}"}},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: Proc | None = None

    def ref(self) -> str:
        return f"{NIC_IP}:{CACHE_PORT}/{UPSTREAM_NAME}/{REPO}:{TAG}"

    def start(self, timeout: float = 60.0) -> None:
        argv = [*faas_accel_argv(), "cache", "serve", "--config", str(self.config_path)]
        self.proc = Proc(nsenter(self.topo.nic, argv), self.log, env={"NIC_CACHE_ACCESS_LOG": "-"})
        self.proc.wait_until(
            lambda: http_answers(self.topo.vm, self.url + "/v2/"), timeout, f"{self.url}/v2/ answering"
        )

    def upstream_bytes(self) -> float | None:
        try:  # the connection is made in the VM's namespace, where the cache's address is
            with netns.inside(self.topo.vm), CacheAPI(self.url, ADMIN_TOKEN) as api:
                metrics: dict[str, float] = api.stats()["metrics"]
        except (Refused, BadAnswer):
            return None
        name = "nic_cache_upstream_bytes_total"
        return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=40)  # gunicorn's graceful_timeout is 30 s
            self.proc = None
        shutil.rmtree(self.workdir / "data", ignore_errors=True)


class DistributionMirror:
    """CNCF distribution in proxy mode, in the nic namespace on fresh storage."""

    name = "distribution"

    def __init__(self, topo: Topology, workdir: Path, log: Path) -> None:
        self.registry = NsRegistry(
            topo.nic,
            f"{NIC_IP}:{DISTRIBUTION_PORT}",
            proxy=f"http://{UP_IP}:{REGISTRY_PORT}",
            workdir=workdir,
        )
        self.registry.log = log
        self.log = log

    def ref(self) -> str:
        return f"{NIC_IP}:{DISTRIBUTION_PORT}/{REPO}:{TAG}"

    def start(self) -> None:
        self.registry.start()

    def upstream_bytes(self) -> float | None:
        return None

    def close(self) -> None:
        self.registry.stop()
        shutil.rmtree(self.registry.storage, ignore_errors=True)


def faas_accel_argv() -> list[str]:
    """The venv's `faas-accel`, or this interpreter running the package."""
    script = Path(sys.executable).with_name("faas-accel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "faas_accel"]


# -- clients ----------------------------------------------------------------------------


class Clients:
    """skopeo pulls run in the vm namespace; tracks them so cleanup can stop stragglers."""

    def __init__(self, topo: Topology, workdir: Path, log_dir: Path) -> None:
        self.topo, self.workdir, self.log_dir = topo, workdir, log_dir
        self.live: set[Proc] = set()
        self.count = 0

    def pull_together(self, ref: str, n: int, expect: oci.Image, timeout: float) -> list[float]:
        """Start `n` pulls of `ref` at once; return each one's seconds from the common start.

        Every client must exit 0 with the layer on disk at its full size.
        """
        procs: list[Proc] = []
        dests: list[Path] = []
        ends: dict[int, float] = {}
        try:
            t0 = time.monotonic()
            for _ in range(n):
                self.count += 1
                dest = self.workdir / f"pull-{self.count}"
                argv = ["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{dest}"]
                proc = Proc(nsenter(self.topo.vm, argv), self.log_dir / f"skopeo-{self.count}.log")
                self.live.add(proc)
                procs.append(proc)
                dests.append(dest)
            deadline = t0 + timeout
            while len(ends) < n:
                for i, proc in enumerate(procs):
                    if i not in ends and not proc.running():
                        ends[i] = time.monotonic()
                if time.monotonic() > deadline:
                    slow = next(p for i, p in enumerate(procs) if i not in ends)
                    raise slow.failure(f"did not finish pulling {ref} within {timeout:.0f}s")
                time.sleep(0.005)
            for proc, dest in zip(procs, dests, strict=True):
                if proc.popen.returncode != 0:
                    raise proc.failure(f"exited with status {proc.popen.returncode}")
                check_pulled(dest, expect)
            return [ends[i] - t0 for i in range(n)]
        finally:
            for proc in procs:
                stop(proc)
                self.live.discard(proc)
            for dest in dests:
                shutil.rmtree(dest, ignore_errors=True)

    def close(self) -> None:
        for proc in list(self.live):
            stop(proc)
        self.live.clear()


def check_pulled(dest: Path, expect: oci.Image) -> None:
    for layer in expect.layers:
        got = dest / layer.hex
        size = got.stat().st_size if got.exists() else None
        if size != layer.size:
            raise RuntimeError(f"{dest}: layer {layer.digest} has {size} bytes, expected {layer.size}")


def seed_upstream(topo: Topology, upstream: NsRegistry, image: oci.Image, workdir: Path) -> None:
    """Push the image from inside the up namespace, so the push never crosses the uplink."""
    layout = oci.write_layout(workdir / "layout", "push", image)
    run(
        nsenter(
            topo.up,
            [
                "skopeo",
                "copy",
                "--quiet",
                "--preserve-digests",
                "--dest-tls-verify=false",
                f"oci:{layout}:push",
                f"docker://{upstream.host}/{REPO}:{TAG}",
            ],
        ),
        timeout=600,
    )
    shutil.rmtree(layout)
