"""One lab VM: its network, hosts.toml files and image store, its container runtime, and the
provider, hook and fan-out agent the lab runs in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from ..dockerd import dockerd_argv
from ..mirror_config.plan import Registry, hosts_toml
from . import daemons, net
from .daemons import Daemon
from .host import LabError, paths
from .spec import (
    CACHE_PORT,
    HOOK_PORT,
    LOCAL_REGISTRY,
    NIC_IP,
    PROVIDER_PORT,
    REGISTRY_HOST,
    REGISTRY_PORT,
    UPSTREAM_IP,
    VM,
    LabSpec,
)

PY = sys.executable


def start_vm(spec: LabSpec, vm: VM, p: dict[str, Path]) -> list[Daemon]:
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
            dockerd_argv(data_root=disk / "docker", exec_root=d / "docker-exec", pidfile=d / "docker.pid",
                         sock=sock, config=d / "daemon.json", containerd_namespace=vm.netns),
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
