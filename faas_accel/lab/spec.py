"""The lab's shape, computed without I/O: names, addresses, ports, shaping parameters.

    inet (fa-inet)             nic (fa-nic)                       vmK (fa-vmK)
    registry 127.0.0.1:5001    bridge fa-br 198.18.1.1/24         198.18.1.(10+K)/24
    wanproxy 198.18.0.1:5000 <-> 198.18.0.2 uplink  <-> bridge <-> containerd, provider :8081,
       (tbf + user-space RTT)  nic_cache 198.18.1.1:5000          hook :8080 + 127.0.0.1:5000
                                 host side fa-host 198.18.1.2/24 (for the CLI, tests, locust)

The NIC forwards between the VMs and inet (the `--no-accel` path, the paper's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nic_cache.units import parse_duration, parse_rate

PREFIX = "fa-"
INET, NIC = f"{PREFIX}inet", f"{PREFIX}nic"
UPSTREAM_IP, NIC_UPLINK_IP = "198.18.0.1", "198.18.0.2"
NIC_IP, HOST_IP = "198.18.1.1", "198.18.1.2"
REGISTRY_HOST = "registry.lab"  # the name images use for the lab's upstream registry
REGISTRY_PORT, REGISTRY_BACKEND_PORT = 5000, 5001
CACHE_PORT, HOOK_PORT, PROVIDER_PORT, LOCAL_REGISTRY = 5000, 8080, 8081, "127.0.0.1:5000"
PEER_PORT = 5002  # CNCF distribution in proxy mode on the NIC: the peer to beat
FLOOR_PORT = 5003  # a plain CNCF registry on the NIC holding every image: the local floor
MAX_VMS = 200
RUNTIMES = ("containerd", "docker")
VM_DISKS = ("tmpfs", "disk")


@dataclass(frozen=True, kw_only=True)
class LabSpec:
    """What `faas-accel lab up` builds."""

    vms: int = 2
    runtime: str = "containerd"
    wan_rate: str = "1gbit"  # tc tbf on the inet<->nic link (the paper's uplink)
    wan_rtt: str = "20ms"  # added per round trip by the delaying proxy
    wan_setup: str = "20ms"  # added per new connection
    vm_link: str | None = None  # e.g. "25gbit"; None leaves NIC<->VM links unshaped
    nic_cpus: str | None = None  # taskset list for the cache, e.g. "0"
    # where a VM's image store lives: "tmpfs" stands for a VM's local NVMe; "disk" is this
    # machine's own disk, whose slow metadata operations double containerd's unpack time
    vm_disk: str = "tmpfs"
    accel: bool = True  # VMs' gateways are hooks (False: providers, the baseline)
    prepull: int = 0  # > 0: each VM runs `faas-accel prepull run --limit N` (NIC's top N images)
    fanout: bool = True  # with accel: each VM runs `faas-accel prepull fanout` (others' deploys)
    fanout_budget: str = "4GiB"  # bytes of a VM's store fan-out may use
    transcode: str = "zstd"  # the NIC's layer re-encoding: zstd | tar | off
    workdir: str = "/var/tmp/faas-accel-lab"
    user: str = "admin"
    password: str = "faas-accel-lab"
    admin_token: str = "faas-accel-lab-token"
    extra_images: tuple[str, ...] = field(default_factory=tuple)

    def validate(self) -> LabSpec:
        """Raise ValueError with a readable reason for a bad option."""
        if not 1 <= self.vms <= MAX_VMS:
            raise ValueError(f"--vms must be between 1 and {MAX_VMS}, got {self.vms}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.prepull < 0:
            raise ValueError(f"--prepull takes a number of images (0: off), got {self.prepull}")
        if self.prepull and not self.accel:
            raise ValueError(
                "--prepull needs the hook (prepulled images are the hook's rewritten ones): drop --no-accel"
            )
        if self.transcode not in ("zstd", "tar", "off"):
            raise ValueError(f"--transcode must be zstd, tar or off, got {self.transcode!r}")
        if self.vm_disk not in VM_DISKS:
            raise ValueError(f"--vm-disk must be one of {', '.join(VM_DISKS)}, got {self.vm_disk!r}")
        for name, value in (("--wan-rate", self.wan_rate), ("--vm-link", self.vm_link)):
            if value is not None and parse_rate(value) <= 0:
                raise ValueError(f"{name} must be a positive rate like 1gbit, got {value!r}")
        parse_duration(self.wan_rtt)
        parse_duration(self.wan_setup)
        if self.nic_cpus is not None and not all(
            p.strip().isdigit() for p in self.nic_cpus.replace("-", ",").split(",")
        ):
            raise ValueError(f"--nic-cpus takes a CPU list like 0 or 0-1, got {self.nic_cpus!r}")
        return self

    def vm(self, k: int) -> VM:
        """The k-th VM (1-based)."""
        return VM(k, self)

    @property
    def all_vms(self) -> list[VM]:
        return [self.vm(k) for k in range(1, self.vms + 1)]

    @property
    def cache_url(self) -> str:
        return f"http://{NIC_IP}:{CACHE_PORT}"

    @property
    def peer_host(self) -> str:
        """The peer (distribution proxy) as VMs address it in image references."""
        return f"{NIC_IP}:{PEER_PORT}"

    @property
    def floor_host(self) -> str:
        """A plain registry on the NIC already holding every seeded image (no cache logic)."""
        return f"{NIC_IP}:{FLOOR_PORT}"

    @property
    def upstream_url(self) -> str:
        """The upstream registry as the NIC (and the VMs, via the NIC) see it."""
        return f"http://{UPSTREAM_IP}:{REGISTRY_PORT}"


@dataclass(frozen=True)
class VM:
    """One VM's names and addresses."""

    k: int
    spec: LabSpec

    @property
    def name(self) -> str:
        return f"vm{self.k}"

    @property
    def netns(self) -> str:
        return f"{PREFIX}vm{self.k}"

    @property
    def ip(self) -> str:
        return f"198.18.1.{10 + self.k}"

    @property
    def veth(self) -> tuple[str, str]:
        """(inside the VM, on the NIC's bridge)."""
        return f"{PREFIX}v{self.k}", f"{PREFIX}v{self.k}n"

    @property
    def provider_url(self) -> str:
        return f"http://{self.ip}:{PROVIDER_PORT}"

    @property
    def hook_url(self) -> str:
        return f"http://{self.ip}:{HOOK_PORT}"

    @property
    def gateway_url(self) -> str:
        return self.hook_url if self.spec.accel else self.provider_url

