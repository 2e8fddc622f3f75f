"""Network namespaces, veths, the NIC's bridge and `tc tbf` shaping (iproute2 by subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from ..procfs import running
from .spec import HOST_IP, INET, NIC, NIC_IP, NIC_UPLINK_IP, PREFIX, UPSTREAM_IP, LabSpec, tbf_args

HOST_VETH = (f"{PREFIX}host", f"{PREFIX}hostn")  # (root ns side, bridge side)
WAN_VETH = (f"{PREFIX}wani", f"{PREFIX}wann")  # (inet side, nic side)
BRIDGE = f"{PREFIX}br"


class NetError(RuntimeError):
    """An iproute2 command failed; the message has its stderr."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def nsexec(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run in a namespace's network only (`nsenter --net`, which leaves /sys alone)."""
    return sh("nsenter", f"--net=/run/netns/{ns}", *argv, check=check)


def lab_namespaces() -> list[str]:
    """Every namespace a lab (this one or a crashed one) created."""
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def build(spec: LabSpec) -> None:
    """Create the namespaces and links of `spec` (the caller has torn down any old lab)."""
    for ns in (INET, NIC, *(vm.netns for vm in spec.all_vms)):
        sh("ip", "netns", "add", ns)
        nsexec(ns, "ip", "link", "set", "lo", "up")
    # WAN: inet <-> nic, shaped both ways
    sh(
        "ip",
        "link",
        "add",
        WAN_VETH[0],
        "netns",
        INET,
        "type",
        "veth",
        "peer",
        "name",
        WAN_VETH[1],
        "netns",
        NIC,
    )
    nsexec(INET, "ip", "addr", "add", f"{UPSTREAM_IP}/30", "dev", WAN_VETH[0])
    nsexec(NIC, "ip", "addr", "add", f"{NIC_UPLINK_IP}/30", "dev", WAN_VETH[1])
    for ns, dev in ((INET, WAN_VETH[0]), (NIC, WAN_VETH[1])):
        nsexec(ns, "ip", "link", "set", dev, "up")
        nsexec(ns, "tc", "qdisc", "add", "dev", dev, "root", *tbf_args(spec.wan_rate))
    nsexec(INET, "ip", "route", "add", "198.18.1.0/24", "via", NIC_UPLINK_IP)
    # the NIC's VM side: a bridge, the host's management port, one veth per VM
    nsexec(NIC, "ip", "link", "add", BRIDGE, "type", "bridge")
    nsexec(NIC, "ip", "addr", "add", f"{NIC_IP}/24", "dev", BRIDGE)
    nsexec(NIC, "ip", "link", "set", BRIDGE, "up")
    nsexec(NIC, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "link", "add", HOST_VETH[0], "type", "veth", "peer", "name", HOST_VETH[1], "netns", NIC)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH[0])
    sh("ip", "link", "set", HOST_VETH[0], "up")
    nsexec(NIC, "ip", "link", "set", HOST_VETH[1], "master", BRIDGE, "up")
    for vm in spec.all_vms:
        inside, outside = vm.veth
        sh(
            "ip",
            "link",
            "add",
            inside,
            "netns",
            vm.netns,
            "type",
            "veth",
            "peer",
            "name",
            outside,
            "netns",
            NIC,
        )
        nsexec(vm.netns, "ip", "addr", "add", f"{vm.ip}/24", "dev", inside)
        nsexec(vm.netns, "ip", "link", "set", inside, "up")
        nsexec(vm.netns, "ip", "route", "add", "default", "via", NIC_IP)
        nsexec(NIC, "ip", "link", "set", outside, "master", BRIDGE, "up")
        if spec.vm_link:
            nsexec(vm.netns, "tc", "qdisc", "add", "dev", inside, "root", *tbf_args(spec.vm_link))
            nsexec(NIC, "tc", "qdisc", "add", "dev", outside, "root", *tbf_args(spec.vm_link))


def wan_bytes() -> tuple[int, int]:
    """(bytes inet -> nic, bytes nic -> inet) so far, counted on the NIC's uplink."""
    return link_bytes(NIC, WAN_VETH[1])


def link_bytes(ns: str, dev: str) -> tuple[int, int]:
    """(rx, tx) byte counters of a device in a namespace (/sys is the host's under nsenter)."""
    info = json.loads(sh("ip", "-j", "-s", "-n", ns, "link", "show", "dev", dev).stdout)[0]
    stats = info["stats64"]
    return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])


def kill_namespace_processes(ns: str, timeout: float = 5.0) -> None:
    """End every process living in a lab namespace (functions, daemons, shims' children)."""
    pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(running(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if running(p)]
        if not pids:
            return


def teardown() -> list[str]:
    """Delete every lab namespace and the host's management veth; returns what went."""
    gone = []
    for ns in lab_namespaces():
        kill_namespace_processes(ns)
        sh("ip", "netns", "delete", ns, check=False)
        gone.append(ns)
    if sh("ip", "link", "show", HOST_VETH[0], check=False).returncode == 0:
        sh("ip", "link", "delete", HOST_VETH[0], check=False)
        gone.append(HOST_VETH[0])
    return gone
