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

import requests
import yaml

from ..mirror_config.plan import Registry, hosts_toml
from . import daemons, net
from .daemons import Daemon
from .spec import (
    CACHE_PORT,
    HOOK_PORT,
    INET,
    LOCAL_REGISTRY,
    NIC,
    NIC_IP,
    PEER_PORT,
    PREFIX,
    PROVIDER_PORT,
    REGISTRY_BACKEND_PORT,
    REGISTRY_HOST,
    REGISTRY_PORT,
    UPSTREAM_IP,
    VM,
    LabSpec,
)

PY = sys.executable
NEEDED = {  # program -> Debian package that provides it
    "ip": "iproute2",
    "tc": "iproute2",
    "nsenter": "util-linux",
    "taskset": "util-linux",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
}
NEEDED_DOCKER = {"dockerd": "docker.io"}


class LabError(RuntimeError):
    """The lab cannot be brought up (or down) as asked; the message says what to do."""


def check_host(
    spec: LabSpec, which: Callable[[str], str | None] = shutil.which, euid: int | None = None
) -> None:
    """Refuse clearly when not root or a needed program is missing."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise LabError(
            "the lab needs root (it creates network namespaces, veths and containers): run it with sudo"
        )
    needed = {**NEEDED, **(NEEDED_DOCKER if spec.runtime == "docker" else {})}
    missing = sorted({pkg for prog, pkg in needed.items() if which(prog) is None})
    if missing:
        progs = ", ".join(p for p, pkg in needed.items() if pkg in missing and which(p) is None)
        raise LabError(f"missing program(s): {progs}; install with: apt-get install {' '.join(missing)}")


def paths(spec: LabSpec) -> dict[str, Path]:
    root = Path(spec.workdir)
    return {"root": root, "seed": root / "seed", "run": root / "run", "state": root / "run" / "state.json"}


# -- up ---------------------------------------------------------------------------------


def up(
    spec: LabSpec, *, images: dict[str, Any] | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Bring the lab up (idempotent: a healthy lab with the same spec is left as it is)."""
    spec.validate()
    check_host(spec)
    p = paths(spec)
    running, facts = daemons.load(p["state"])
    if running and facts.get("spec") == asdict(spec) and all(d.alive() for d in running):
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
            started += _start_vm(spec, vm, p)
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
        reg, lambda: _ns_http(INET, f"http://127.0.0.1:{REGISTRY_BACKEND_PORT}/v2/"), 20, "/v2/ answering"
    )
    daemons.wait_ready(proxy, lambda: _ns_http(NIC, f"{spec.upstream_url}/v2/"), 20, "the WAN path answering")
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
    daemons.wait_ready(cache, lambda: _ns_http(NIC, f"{spec.cache_url}/healthz"), 30, "/healthz answering")
    floor_cfg = registry_config(p["seed"], spec.floor_host)
    # the floor serves the upstream's own storage: read-only, so nothing done to it reaches "the internet"
    floor_cfg["storage"]["delete"] = {"enabled": False}
    floor_cfg["storage"]["maintenance"] = {"readonly": {"enabled": True}, "uploadpurging": {"enabled": False}}
    (d / "floor.yml").write_text(yaml.safe_dump(floor_cfg))
    floor = daemons.start(
        "floor", ["docker-registry", "serve", str(d / "floor.yml")], d / "floor.log", netns=NIC
    )
    daemons.wait_ready(floor, lambda: _ns_http(NIC, f"http://{spec.floor_host}/v2/"), 20, "/v2/ answering")
    return [cache, _start_peer(spec, d), floor]


def _start_peer(spec: LabSpec, d: Path) -> Daemon:
    peer_cfg = registry_config(d / "peer", f"{NIC_IP}:{PEER_PORT}")
    peer_cfg["proxy"] = {"remoteurl": spec.upstream_url}
    (d / "peer.yml").write_text(yaml.safe_dump(peer_cfg))
    peer = daemons.start("peer", ["docker-registry", "serve", str(d / "peer.yml")], d / "peer.log", netns=NIC)
    daemons.wait_ready(peer, lambda: _ns_http(NIC, f"http://{spec.peer_host}/v2/"), 20, "/v2/ answering")
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


def _start_vm(spec: LabSpec, vm: VM, p: dict[str, Path]) -> list[Daemon]:
    d = p["run"] / vm.name
    d.mkdir(parents=True, exist_ok=True)
    nic_host = f"{NIC_IP}:{CACHE_PORT}"
    registries = {
        # the direct path: registry.lab is the internet's registry, reached through the NIC's router
        REGISTRY_HOST: spec.upstream_url,
        # the peer's and the floor's images are pulled by their address, over plain http
        spec.peer_host: f"http://{spec.peer_host}",
        spec.floor_host: f"http://{spec.floor_host}",
        # containerd VMs pull the hook's rewritten images from the NIC directly (plain http via
        # hosts.toml); a docker VM goes through the hook's local registry on 127.0.0.1 instead
        nic_host: f"http://{nic_host}",
    }
    for host, url in registries.items():
        (d / "certs.d" / host).mkdir(parents=True, exist_ok=True)
        (d / "certs.d" / host / "hosts.toml").write_text(_hosts_toml(host, url))
    (d / "password").write_text(spec.password)
    disk = _vm_disk(spec, vm, d)
    out: list[Daemon] = []
    if spec.runtime == "containerd":
        sock = str(d / "containerd.sock")
        (d / "containerd.toml").write_text(_containerd_config(d, disk, sock))
        rt = daemons.start(
            "containerd",
            ["containerd", "--config", str(d / "containerd.toml")],
            d / "containerd.log",
            netns=vm.netns,
        )
        out.append(rt)
        daemons.wait_ready(
            rt, lambda: os.path.exists(sock) and _ctr_ok(sock, vm.netns), 30, "ctr version answering"
        )
        vm_args = runtime_args(spec, vm)
    else:
        sock = str(d / "docker.sock")
        (d / "daemon.json").write_text(
            json.dumps({"insecure-registries": [f"{UPSTREAM_IP}:{REGISTRY_PORT}"]})
        )
        rt = daemons.start(
            "dockerd",
            [
                "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                f"--data-root={disk / 'docker'}",
                f"--exec-root={d / 'docker-exec'}",
                f"--pidfile={d / 'docker.pid'}",
                f"-H=unix://{sock}",
                f"--config-file={d / 'daemon.json'}",
                f"--containerd-namespace={vm.netns}",
                f"--containerd-plugins-namespace={vm.netns}-plugins",
            ],
            d / "dockerd.log",
            netns=vm.netns,
        )
        out.append(rt)
        daemons.wait_ready(rt, lambda: os.path.exists(sock), 30, "the docker socket")
        vm_args = runtime_args(spec, vm)
    provider = daemons.start(
        "provider",
        [
            PY,
            "-m",
            "faas_accel",
            "provider",
            "serve",
            *vm_args,
            "--bind",
            f"0.0.0.0:{PROVIDER_PORT}",
            "--state-dir",
            str(d / "provider"),
            "--auth-user",
            spec.user,
            "--auth-password-file",
            str(d / "password"),
        ],
        d / "provider.log",
        netns=vm.netns,
    )
    out.append(provider)
    daemons.wait_ready(provider, lambda: _http(f"{vm.provider_url}/healthz"), 30, "/healthz answering")
    if spec.accel:
        hook = daemons.start(
            "hook",
            [
                PY,
                "-m",
                "faas_accel",
                "hook",
                "serve",
                "--provider",
                f"http://127.0.0.1:{PROVIDER_PORT}",
                "--cache",
                spec.cache_url,
                "--token",
                spec.admin_token,
                "--bind",
                f"0.0.0.0:{HOOK_PORT}",
                *(
                    ["--local-registry", LOCAL_REGISTRY]
                    if spec.runtime == "docker"
                    else ["--mirror-host", f"{NIC_IP}:{CACHE_PORT}"]
                ),
            ],
            d / "hook.log",
            netns=vm.netns,
        )
        out.append(hook)
        daemons.wait_ready(hook, lambda: _http(f"{vm.hook_url}/healthz"), 30, "/healthz answering")
    where = ["--mirror-host", mirror_host(spec), *vm_args]
    if spec.accel and spec.fanout:
        out.append(
            daemons.start(
                "fanout",
                [
                    PY, "-m", "faas_accel", "prepull", "fanout", "--cache", spec.cache_url, "--vm", vm.ip,
                    "--state", str(d / "fanout.json"), "--budget", spec.fanout_budget, *where,
                ],
                d / "fanout.log",
                netns=vm.netns,
                env={"NIC_CACHE_ADMIN_TOKEN": spec.admin_token},
            )
        )  # fmt: skip
    if spec.accel and spec.prepull:
        out.append(
            daemons.start(
                "prepull",
                [
                    PY,
                    "-m",
                    "faas_accel",
                    "prepull",
                    "run",
                    "--cache",
                    spec.cache_url,
                    "--limit",
                    str(spec.prepull),
                    "--interval",
                    "30s",
                    *where,
                ],
                d / "prepull.log",
                netns=vm.netns,
                env={"NIC_CACHE_ADMIN_TOKEN": spec.admin_token},  # not on a command line
            )
        )
    return out


def _hosts_toml(host: str, url: str) -> str:
    # containerd 1.6 ignores a file with only `server`: the host entry is what it uses
    return hosts_toml(url, Registry(host=host, server=url), dial_timeout=0)


VM_TMPFS_SIZE = "6g"  # per VM; tmpfs takes only what is stored


def mirror_host(spec: LabSpec) -> str:
    """Where a VM's hook rewrites images to: the NIC (containerd, via hosts.toml) or the hook's
    own registry on 127.0.0.1 (docker pulls plain HTTP from loopback only)."""
    return f"{NIC_IP}:{CACHE_PORT}" if spec.runtime == "containerd" else LOCAL_REGISTRY


def runtime_args(spec: LabSpec, vm: VM) -> list[str]:
    """`--runtime/--address/...` naming a VM's runtime, as the provider and prepull take them."""
    d = paths(spec)["run"] / vm.name
    if spec.runtime == "containerd":
        return [
            "--runtime",
            "containerd",
            "--address",
            str(d / "containerd.sock"),
            "--namespace",
            vm.netns,
            "--hosts-dir",
            str(d / "certs.d"),
        ]
    return ["--runtime", "docker", "--address", f"unix://{d / 'docker.sock'}"]


def _vm_disk(spec: LabSpec, vm: VM, d: Path) -> Path:
    """The VM's image store: a tmpfs of its own (unmounted by `down`) or a plain directory."""
    disk = d / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    if spec.vm_disk == "tmpfs" and not os.path.ismount(disk):
        # bounded like a disk: a VM that fills it gets "no space left", not the host's OOM killer
        opts = f"mode=0711,size={VM_TMPFS_SIZE}"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, f"{vm.netns}-disk", str(disk)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LabError(
                f"cannot mount a tmpfs for {vm.name}'s image store: {result.stderr.strip()}"
                " (try --vm-disk disk)"
            )
    return disk


def _containerd_config(d: Path, disk: Path, sock: str) -> str:
    q = json.dumps
    return (
        "version = 2\n"
        f"root = {q(str(disk / 'containerd'))}\n"
        f"state = {q(str(d / 'containerd-state'))}\n"
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f"[grpc]\n  address = {q(sock)}\n"
        f'[plugins]\n  [plugins."io.containerd.internal.v1.opt"]\n    path = {q(str(d / "opt"))}\n'
    )


def _ctr_ok(sock: str, netns: str) -> bool:
    return net.nsexec(netns, "ctr", "--address", sock, "version", check=False).returncode == 0


def _http(url: str) -> bool:
    try:
        with requests.get(url, timeout=2) as resp:
            return resp.status_code < 500
    except requests.RequestException:
        return False


def _ns_http(ns: str, url: str) -> bool:
    probe = (
        f"import urllib.request,sys\ntry: urllib.request.urlopen({url!r}, timeout=2)\n"
        "except Exception as e: sys.exit(0 if hasattr(e, 'code') else 1)"
    )
    return net.nsexec(ns, PY, "-c", probe, check=False).returncode == 0


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
