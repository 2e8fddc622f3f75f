"""Network namespaces by iproute2: veths, addresses, routes, `tc tbf`, link counters.

Programs run in a namespace through `nsenter --net` only: `ip netns exec` would remount
/sys, which breaks runc and friends (see DESIGN.md, Pitfalls). Veths are created straight
inside their namespaces, so device names never touch the root namespace and cannot collide
with another run.

The lab (net.py) wires its fixed namespaces with the functions here; a benchmark takes a
`NetLab`, which names every namespace it creates `<prefix>-<name>` and deletes them all in
`close()` (safe to call twice). `inside(ns)` moves the calling thread into a namespace for a
moment, so a benchmark can speak HTTP to servers that only exist there without spawning a
helper per request.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from nic_cache.units import parse_rate

from ..procfs import running

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
IFNAMSIZ = 15


class NetError(RuntimeError):
    """An iproute2 (or other short) command failed; the message quotes its stderr."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command, raising NetError with its stderr when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        detail = result.stderr.strip() or result.stdout.strip()
        raise NetError(f"{' '.join(argv)} exited with {result.returncode}: {detail}")
    return result


def nsenter(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` prefixed to run in the network namespace `ns` only."""
    return ["nsenter", f"--net={os.path.join(NETNS_DIR, ns)}", *argv]


def nsexec(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a short command in `ns`'s network only."""
    return sh(*nsenter(ns, argv), check=check)


def tbf_args(rate: str, latency_ms: int = 50) -> list[str]:
    """`tc qdisc add ... root` arguments shaping to `rate`.

    The bucket holds ~10 ms at the rate (256 KB at 200 Mbit), never less than 64 KiB,
    so one TSO burst always fits; `latency` bounds the queue instead of a byte limit.
    """
    bits = parse_rate(rate)
    burst = max(bits // 8 // 100, 64 * 1024)
    return ["tbf", "rate", str(bits), "burst", str(burst), "latency", f"{latency_ms}ms"]


@dataclass(frozen=True)
class LinkCounters:
    """Byte and packet counters of one device, as the kernel reports them."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int

    def __sub__(self, before: LinkCounters) -> LinkCounters:
        return LinkCounters(
            self.rx_bytes - before.rx_bytes,
            self.tx_bytes - before.tx_bytes,
            self.rx_packets - before.rx_packets,
            self.tx_packets - before.tx_packets,
        )


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the body with this thread in network namespace `ns`.

    Sockets keep the namespace they were created in, so only open connections inside the
    block. Subprocesses started inside it would inherit the namespace too: don't.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


# An empty ProxyHandler keeps urllib off any proxy the environment names.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(
    ns: str, url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET `url` from inside `ns`; returns (status, body). Raises OSError if nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    with inside(ns):
        try:
            with _opener.open(request, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()


def http_answers(ns: str, url: str) -> bool:
    """True if something at `url`, seen from `ns`, answers HTTP with any status."""
    try:
        http_get(ns, url, timeout=2.0)
    except OSError:
        return False
    return True


def add_namespace(ns: str) -> None:
    """Create namespace `ns` with its loopback up."""
    sh("ip", "netns", "add", ns)
    nsexec(ns, "ip", "link", "set", "lo", "up")


def veth(ns_a: str, dev_a: str, ns_b: str, dev_b: str) -> None:
    """A veth pair with end `dev_a` in `ns_a` and `dev_b` in `ns_b`, both up."""
    for dev in (dev_a, dev_b):
        if len(dev) > IFNAMSIZ:
            raise NetError(f"device name {dev!r} is longer than {IFNAMSIZ} characters")
    sh("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
    nsexec(ns_a, "ip", "link", "set", dev_a, "up")
    nsexec(ns_b, "ip", "link", "set", dev_b, "up")


def address(ns: str, dev: str, cidr: str) -> None:
    """Give `dev` in `ns` the address `cidr`."""
    nsexec(ns, "ip", "addr", "add", cidr, "dev", dev)


def route(ns: str, dest: str, via: str) -> None:
    """Route `dest` ("default" or a prefix) through gateway `via`."""
    nsexec(ns, "ip", "route", "add", dest, "via", via)


def forward(ns: str) -> None:
    """Let `ns` route IPv4 between its devices (the sysctl is per namespace)."""
    nsexec(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def shape(ns: str, dev: str, rate: str) -> None:
    """Limit what `dev` sends to `rate` with a tbf root qdisc."""
    nsexec(ns, "tc", "qdisc", "replace", "dev", dev, "root", *tbf_args(rate))


def counters(ns: str, dev: str) -> LinkCounters:
    """The kernel's counters for `dev` in `ns` (64-bit, from `ip -s`; /sys is the host's
    under nsenter, so it cannot be read there)."""
    out = sh("ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev).stdout
    stats = json.loads(out)[0]["stats64"]
    return LinkCounters(
        int(stats["rx"]["bytes"]),
        int(stats["tx"]["bytes"]),
        int(stats["rx"]["packets"]),
        int(stats["tx"]["packets"]),
    )


def namespace_pids(ns: str) -> list[int]:
    """Processes living in `ns`."""
    return [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split() if p.isdigit()]


def kill_namespace_processes(ns: str, timeout: float = 5.0) -> None:
    """End every process living in `ns` (SIGTERM, then SIGKILL after `timeout`)."""
    pids = namespace_pids(ns)
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


def delete_namespace(ns: str) -> None:
    """Delete `ns` (its veths go with it); no error if it is gone."""
    sh("ip", "netns", "delete", ns, check=False)


class NetLab:
    """Namespaces named `<prefix>-<name>` (wire them with the functions above); `close()`
    removes them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: list[str] = []

    def namespace(self, name: str) -> str:
        """Create `<prefix>-<name>` with loopback up and return its full name."""
        full = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        nsexec(full, "ip", "link", "set", "lo", "up")
        return full

    def leftover_pids(self) -> dict[str, list[int]]:
        """Processes still living in our namespaces (ours to stop before deleting them)."""
        found = {ns: namespace_pids(ns) for ns in self.namespaces}
        return {ns: pids for ns, pids in found.items() if pids}

    def close(self) -> None:
        """Delete every namespace this lab created (their veths go with them)."""
        while self.namespaces:
            delete_namespace(self.namespaces.pop())


def stale_namespaces(base: str) -> list[str]:
    """Namespaces named `<base>-<pid>-...` whose pid is no longer running (a crashed run)."""
    out = sh("ip", "netns", "list", check=False).stdout
    stale = []
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        ours = len(parts) >= 3 and parts[0] == base and parts[1].isdigit()
        if ours and not os.path.exists(f"/proc/{parts[1]}"):
            stale.append(name)
    return stale
