"""`lab up`, `lab status`, `lab down`: a whole server — N VMs, a SmartNIC and the internet.

Everything the lab starts lives in its network namespaces, so `down` can end every process
(daemons, shims, function containers) by asking the kernel which PIDs are in them, even
after a crash that lost the state file. The upstream registry's storage (`<workdir>/seed`)
is "the internet" and survives `down`; everything else under `<workdir>/run` does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from . import daemons, net
from .daemons import Daemon
from .host import LabError, check_host, paths
from .netns import http_answers
from .spec import (
    CACHE_PORT,
    INET,
    NIC,
    NIC_IP,
    PEER_PORT,
    PREFIX,
    REGISTRY_BACKEND_PORT,
    REGISTRY_HOST,
    REGISTRY_PORT,
    UPSTREAM_IP,
    LabSpec,
)
from .vm import start_vm

PY = sys.executable
# -- up ---------------------------------------------------------------------------------


def up(
    spec: LabSpec, *, images: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Bring the lab up (idempotent: a healthy lab with the same spec is left as it is)."""
    spec.validate()
    check_host(spec)
    p = paths(spec)
    running, facts = daemons.load(p["state"])
    same = facts.get("spec") == json.loads(json.dumps(asdict(spec)))  # as saved: JSON has no tuples
    if running and same and all(d.alive() for d in running):
        log("lab is already up")
        return status(spec)
    if running or net.lab_namespaces():
        log("cleaning up a previous lab")
        down(spec, log=lambda _: None)
    p["run"].mkdir(parents=True, exist_ok=True)
    started: list[Daemon] = []
    try:
        log(f"network: inet, nic, {spec.vms} VM(s); WAN {spec.wan_rate}, +{spec.wan_rtt}/round trip")
        net.build(spec)
        started += _start_inet(spec, p)
        started += _start_nic(spec, p)
        for vm in spec.all_vms:
            started += start_vm(spec, vm, p)
        daemons.save(p["state"], started, {"spec": asdict(spec)})
    except BaseException:
        daemons.save(p["state"], started, {"spec": asdict(spec), "failed": True})
        raise
    return status(spec)


def _start_inet(spec: LabSpec, p: dict[str, Path]) -> list[Daemon]:
    cfg = p["run"] / "inet" / "registry.yml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump(registry_config(p["seed"], f"127.0.0.1:{REGISTRY_BACKEND_PORT}")))
    reg = daemons.start(
        "registry", ["docker-registry", "serve", str(cfg)], p["run"] / "inet" / "registry.log", netns=INET
    )
    proxy = daemons.start(
        "wanproxy",
        [
            PY,
            "-m",
            "faas_accel.lab.wanproxy",
            "--listen",
            f"{UPSTREAM_IP}:{REGISTRY_PORT}",
            "--target",
            f"127.0.0.1:{REGISTRY_BACKEND_PORT}",
            "--rtt",
            spec.wan_rtt,
            "--setup",
            spec.wan_setup,
        ],
        p["run"] / "inet" / "wanproxy.log",
        netns=INET,
    )
    daemons.wait_ready(
        reg, lambda: http_answers(INET, f"http://127.0.0.1:{REGISTRY_BACKEND_PORT}/v2/"), 20, "/v2/ answering"
    )
    daemons.wait_ready(
        proxy, lambda: http_answers(NIC, f"{spec.upstream_url}/v2/"), 20, "the WAN path answering"
    )
    return [reg, proxy]


def registry_config(storage: Path, addr: str) -> dict[str, Any]:
    """A CNCF distribution config serving `storage` on `addr`."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": addr, "secret": "faas-accel-lab"},
    }


def _start_nic(spec: LabSpec, p: dict[str, Path]) -> list[Daemon]:
    d = p["run"] / "nic"
    d.mkdir(parents=True, exist_ok=True)
    cfg = {
        "listen": f"{NIC_IP}:{CACHE_PORT}",
        "data_dir": str(d / "data"),
        "capacity": "20GiB",
        "admin_token": spec.admin_token,
        "default_upstream": REGISTRY_HOST,
        "upstreams": {REGISTRY_HOST: {"url": spec.upstream_url}},
        "workers": 2,
        "threads": 32,
        "transcode": {"encoding": spec.transcode},
    }
    (d / "nic-cache.yml").write_text(yaml.safe_dump(cfg))
    cache = daemons.start(
        "nic-cache",
        [PY, "-m", "faas_accel", "cache", "serve", "--config", str(d / "nic-cache.yml")],
        d / "cache.log",
        netns=NIC,
        cpus=spec.nic_cpus,
    )
    daemons.wait_ready(
        cache, lambda: http_answers(NIC, f"{spec.cache_url}/healthz"), 30, "/healthz answering"
    )
    floor_cfg = registry_config(p["seed"], spec.floor_host)
    # the floor serves the upstream's own storage: read-only, so nothing done to it reaches "the internet"
    floor_cfg["storage"]["delete"] = {"enabled": False}
    floor_cfg["storage"]["maintenance"] = {"readonly": {"enabled": True}, "uploadpurging": {"enabled": False}}
    (d / "floor.yml").write_text(yaml.safe_dump(floor_cfg))
    floor = daemons.start(
        "floor", ["docker-registry", "serve", str(d / "floor.yml")], d / "floor.log", netns=NIC
    )
    daemons.wait_ready(
        floor, lambda: http_answers(NIC, f"http://{spec.floor_host}/v2/"), 20, "/v2/ answering"
    )
    return [cache, _start_peer(spec, d), floor]


def _start_peer(spec: LabSpec, d: Path) -> Daemon:
    peer_cfg = registry_config(d / "peer", f"{NIC_IP}:{PEER_PORT}")
    peer_cfg["proxy"] = {"remoteurl": spec.upstream_url}
    (d / "peer.yml").write_text(yaml.safe_dump(peer_cfg))
    peer = daemons.start("peer", ["docker-registry", "serve", str(d / "peer.yml")], d / "peer.log", netns=NIC)
    daemons.wait_ready(peer, lambda: http_answers(NIC, f"http://{spec.peer_host}/v2/"), 20, "/v2/ answering")
    return peer


def reset_peer(spec: LabSpec) -> None:
    """Restart the peer (distribution's proxy) with an empty cache, as the NIC's is emptied."""
    p = paths(spec)
    running, facts = daemons.load(p["state"])
    old = [d for d in running if d.name == "peer"]
    for d in old:
        d.stop(timeout=5)
    daemons.reap()
    shutil.rmtree(p["run"] / "nic" / "peer", ignore_errors=True)
    others = [d for d in running if d.name != "peer"]
    try:
        peer = _start_peer(spec, p["run"] / "nic")
    except BaseException:
        daemons.save(p["state"], others, facts)  # the dead peer is no longer the lab's
        raise
    daemons.save(p["state"], [*others, peer], facts)


# -- status -----------------------------------------------------------------------------


def status(spec: LabSpec) -> dict[str, Any]:
    """What the lab is, for scripts (`lab status --json`)."""
    p = paths(spec)
    running, facts = daemons.load(p["state"])
    saved = facts.get("spec")
    if isinstance(saved, dict):
        spec = LabSpec(**{**saved, "extra_images": tuple(saved.get("extra_images", ()))})
    by_ns: dict[str | None, list[Daemon]] = {}
    for d in running:
        by_ns.setdefault(d.netns, []).append(d)

    def procs(ns: str) -> dict[str, Any]:
        return {d.name: {"pid": d.pid, "alive": d.alive(), "log": d.log} for d in by_ns.get(ns, [])}

    up_now = bool(running) and all(d.alive() for d in running)
    return {
        "up": up_now,
        "namespaces": sorted(net.lab_namespaces()),
        "wan": {"rate": spec.wan_rate, "rtt": spec.wan_rtt, "setup": spec.wan_setup},
        "vm_link": spec.vm_link,
        "nic_cpus": spec.nic_cpus,
        "accel": spec.accel,
        "fanout": spec.accel and spec.fanout,
        "transcode": spec.transcode,
        "runtime": spec.runtime,
        "inet": {
            "netns": INET,
            "addresses": [f"{UPSTREAM_IP}/30"],
            "registry": f"{UPSTREAM_IP}:{REGISTRY_PORT}",
            "processes": procs(INET),
        },
        "nic": {
            "netns": NIC,
            "addresses": [f"{NIC_IP}/24", "198.18.0.2/30"],
            "cache_url": spec.cache_url,
            "peer_url": f"http://{spec.peer_host}",
            "floor_url": f"http://{spec.floor_host}",
            "admin_token": spec.admin_token,
            "upstream_url": spec.upstream_url,
            "processes": procs(NIC),
        },
        "registry_host": REGISTRY_HOST,
        "vms": [
            {
                "name": vm.name,
                "netns": vm.netns,
                "addresses": [f"{vm.ip}/24"],
                "gateway_url": vm.gateway_url,
                "provider_url": vm.provider_url,
                "hook_url": vm.hook_url if spec.accel else None,
                "auth": {"user": spec.user, "password": spec.password},
                "runtime": spec.runtime,
                "runtime_socket": str(
                    p["run"]
                    / vm.name
                    / ("containerd.sock" if spec.runtime == "containerd" else "docker.sock")
                ),
                "containerd_namespace": vm.netns if spec.runtime == "containerd" else None,
                "processes": procs(vm.netns),
            }
            for vm in spec.all_vms
        ],
    }


# -- down -------------------------------------------------------------------------------


def down(spec: LabSpec, *, log: Callable[[str], None] = print) -> list[str]:
    """Tear down whatever a lab (this one, or one that crashed) left; returns what went."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root to be torn down: run it with sudo")
    p = paths(spec)
    running, _ = daemons.load(p["state"])
    for d in running:  # polite first: let daemons shut down their children
        d.stop(timeout=5)
    gone = net.teardown()
    daemons.reap()
    gone += _cleanup_runtime_leftovers()
    if p["run"].exists():
        _unmount_under(p["run"])
        shutil.rmtree(p["run"], ignore_errors=True)
        gone.append(str(p["run"]))
    for item in gone:
        log(f"removed {item}")
    return gone


def _cleanup_runtime_leftovers() -> list[str]:
    """runc state and cgroups containerd leaves per containerd namespace (ours are fa-*)."""
    gone = []
    for base in (Path("/run/containerd/runc"), Path("/sys/fs/cgroup")):
        if not base.exists():
            continue
        for d in base.glob(f"{PREFIX}vm*"):
            for sub in sorted(d.rglob("*"), key=lambda x: len(x.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir() if sub.is_dir() else sub.unlink()
            with contextlib.suppress(OSError):
                d.rmdir()
                gone.append(str(d))
    return gone


def _unmount_under(root: Path) -> None:
    prefix = os.path.realpath(root)
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    for point in sorted(
        (m for m in points if m == prefix or m.startswith(prefix + "/")), key=len, reverse=True
    ):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
