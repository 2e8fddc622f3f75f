"""The lab's network: its namespaces, the WAN, the NIC's bridge and the VMs' links, wired
with the netns library (netns.py)."""

from __future__ import annotations

from .netns import (
    NetError,
    add_namespace,
    address,
    counters,
    delete_namespace,
    forward,
    kill_namespace_processes,
    nsexec,
    route,
    sh,
    shape,
    veth,
)
from .spec import HOST_IP, INET, NIC, NIC_IP, NIC_UPLINK_IP, PREFIX, UPSTREAM_IP, LabSpec

__all__ = ["NetError", "build", "lab_namespaces", "nsexec", "teardown", "wan_bytes"]

HOST_VETH = (f"{PREFIX}host", f"{PREFIX}hostn")  # (root ns side, bridge side)
WAN_VETH = (f"{PREFIX}wani", f"{PREFIX}wann")  # (inet side, nic side)
BRIDGE = f"{PREFIX}br"


def lab_namespaces() -> list[str]:
    """Every namespace a lab (this one or a crashed one) created."""
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def build(spec: LabSpec) -> None:
    """Create the namespaces and links of `spec` (the caller has torn down any old lab)."""
    for ns in (INET, NIC, *(vm.netns for vm in spec.all_vms)):
        add_namespace(ns)
    # WAN: inet <-> nic, shaped both ways
    veth(INET, WAN_VETH[0], NIC, WAN_VETH[1])
    address(INET, WAN_VETH[0], f"{UPSTREAM_IP}/30")
    address(NIC, WAN_VETH[1], f"{NIC_UPLINK_IP}/30")
    shape(INET, WAN_VETH[0], spec.wan_rate)
    shape(NIC, WAN_VETH[1], spec.wan_rate)
    route(INET, "198.18.1.0/24", NIC_UPLINK_IP)
    # the NIC's VM side: a bridge, the host's management port, one veth per VM
    nsexec(NIC, "ip", "link", "add", BRIDGE, "type", "bridge")
    address(NIC, BRIDGE, f"{NIC_IP}/24")
    nsexec(NIC, "ip", "link", "set", BRIDGE, "up")
    forward(NIC)
    sh("ip", "link", "add", HOST_VETH[0], "type", "veth", "peer", "name", HOST_VETH[1], "netns", NIC)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH[0])
    sh("ip", "link", "set", HOST_VETH[0], "up")
    nsexec(NIC, "ip", "link", "set", HOST_VETH[1], "master", BRIDGE, "up")
    for vm in spec.all_vms:
        inside, outside = vm.veth
        veth(vm.netns, inside, NIC, outside)
        address(vm.netns, inside, f"{vm.ip}/24")
        route(vm.netns, "default", NIC_IP)
        nsexec(NIC, "ip", "link", "set", outside, "master", BRIDGE, "up")
        if spec.vm_link:
            shape(vm.netns, inside, spec.vm_link)
            shape(NIC, outside, spec.vm_link)


def wan_bytes() -> tuple[int, int]:
    """(bytes inet -> nic, bytes nic -> inet) so far, counted on the NIC's uplink."""
    c = counters(NIC, WAN_VETH[1])
    return c.rx_bytes, c.tx_bytes


def teardown() -> list[str]:
    """Delete every lab namespace and the host's management veth; returns what went."""
    gone = []
    for ns in lab_namespaces():
        kill_namespace_processes(ns)
        delete_namespace(ns)
        gone.append(ns)
    if sh("ip", "link", "show", HOST_VETH[0], check=False).returncode == 0:
        sh("ip", "link", "delete", HOST_VETH[0], check=False)
        gone.append(HOST_VETH[0])
    return gone
