"""systemd units for the NIC (cache, prewarm scheduler) and a faasd VM (hook, prepull agents).

Pure: each function returns a unit's text. Every unit runs `faas-accel` in the foreground
(`Type=exec`: `cache serve` and `hook serve` exec gunicorn in the same process, so
`$MAINPID` is gunicorn's master and `systemctl reload` sends it SIGHUP) and restarts on
failure. Secrets never appear on a command line (`ps` shows those to every user): they
come from the environment file, which only root reads.

Hardening, shared by all: no new privileges, the whole file system read-only except what
each unit names, private /tmp and /dev, no kernel tunables, modules, logs or clock, only
UNIX and IP sockets, and no capabilities. The cache runs as the dedicated `faas-accel`
user (created by sysusers.d) so its data directory can live on any disk; the prewarm
scheduler and the hook own nothing and get a `DynamicUser=`. The prepull agents run as
root because containerd's socket is root's, and still cannot write outside their state.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

USER = "faas-accel"  # the dedicated system user of the cache
ETC = "/etc/faas-accel"
UNIT_DIR = "/etc/systemd/system"
NIC_ENV = f"{ETC}/nic.env"
VM_ENV = f"{ETC}/vm.env"
CACHE_UNIT = "faas-accel-cache.service"
PREWARM_UNIT = "faas-accel-prewarm.service"
HOOK_UNIT = "faas-accel-hook.service"
PREPULL_UNIT = "faas-accel-prepull.service"
FANOUT_UNIT = "faas-accel-fanout.service"

HARDENING = (
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("CapabilityBoundingSet", ""),
    ("UMask", "0027"),
)


@dataclass(frozen=True, kw_only=True)
class Unit:
    """One service unit: its name and the lines of each section."""

    name: str
    description: str
    argv: Sequence[str]  # ExecStart, quoted on rendering
    after: Sequence[str] = ("network-online.target",)
    wants: Sequence[str] = ("network-online.target",)
    before: Sequence[str] = ()
    service: Sequence[tuple[str, str]] = field(default_factory=tuple)  # before the hardening
    reload: bool = False  # ExecReload sends SIGHUP

    def render(self) -> str:
        """The unit file's text."""
        lines = [
            f"# {self.name}: written by `faas-accel install`; a drop-in (systemctl edit) survives a",
            "# reinstall, an edit here does not.",
            "[Unit]",
            f"Description={self.description}",
        ]
        lines += [f"After={' '.join(self.after)}"] if self.after else []
        lines += [f"Wants={' '.join(self.wants)}"] if self.wants else []
        lines += [f"Before={' '.join(self.before)}"] if self.before else []
        lines += ["", "[Service]", "Type=exec", f"ExecStart={shlex.join(self.argv)}"]
        if self.reload:
            lines.append("ExecReload=/bin/kill -HUP $MAINPID")
        lines += ["Restart=on-failure", "RestartSec=2s"]
        lines += [f"{key}={value}" for key, value in self.service]
        lines += ["", "# hardening"]
        lines += [f"{key}={value}" for key, value in HARDENING]
        lines += ["", "[Install]", "WantedBy=multi-user.target"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class NicUnits:
    """What the NIC's units need to know."""

    bin: str  # the faas-accel executable
    config: str = f"{ETC}/nic-cache.yml"
    prewarm: str = f"{ETC}/prewarm.yml"
    data_dir: str = "/var/lib/nic-cache"


@dataclass(frozen=True, kw_only=True)
class VmUnits:
    """What a faasd VM's units need to know."""

    bin: str
    cache_url: str  # the NIC cache as this VM reaches it
    provider_url: str = "http://127.0.0.1:8081"  # faasd-provider
    hook_bind: str = "0.0.0.0:8082"  # where faasd's gateway finds the hook
    local_registry: str = "127.0.0.1:5000"  # faasd pulls plain HTTP only from localhost
    runtime: str = "containerd"
    address: str | None = None  # the runtime's socket; None: containerd's or dockerd's default
    namespace: str = "openfaas-fn"
    limit: int = 10
    budget: str = "4GiB"
    fanout_vm: str | None = None  # this VM's address as the NIC sees it: enables fan-out


def cache_unit(opts: NicUnits) -> Unit:
    """The NIC cache under gunicorn, as the `faas-accel` user, writing only its data dir."""
    return Unit(
        name=CACHE_UNIT,
        description="faas-accel NIC cache (OCI pull-through mirror shared by the server's VMs)",
        argv=[opts.bin, "cache", "serve", "--config", opts.config],
        reload=True,
        service=(
            ("User", USER),
            ("Group", USER),
            ("EnvironmentFile", NIC_ENV),
            ("ReadWritePaths", opts.data_dir),
            ("LimitNOFILE", "65536"),  # one descriptor per streaming client and blob
            ("TimeoutStopSec", "45s"),  # gunicorn's graceful_timeout (30 s) plus margin
        ),
    )


def prewarm_unit(opts: NicUnits) -> Unit:
    """The prewarm scheduler: talks to the cache over HTTP, owns no files."""
    return Unit(
        name=PREWARM_UNIT,
        description="faas-accel prewarm scheduler (fills the NIC cache on prewarm.yml's schedules)",
        argv=[opts.bin, "prewarm", "run", "--config", opts.prewarm],
        after=("network-online.target", CACHE_UNIT),
        wants=("network-online.target", CACHE_UNIT),
        reload=True,
        service=(("DynamicUser", "yes"), ("EnvironmentFile", NIC_ENV)),
    )


def hook_unit(opts: VmUnits) -> Unit:
    """The hook in front of faasd-provider: faasd's gateway points at it."""
    argv = [
        opts.bin,
        "hook",
        "serve",
        "--provider",
        opts.provider_url,
        "--cache",
        opts.cache_url,
        "--bind",
        opts.hook_bind,
        "--local-registry",
        opts.local_registry,
    ]
    return Unit(
        name=HOOK_UNIT,
        description="faas-accel hook (faas-provider proxy that points deploys at the NIC cache)",
        argv=argv,
        after=("network-online.target", "faasd-provider.service"),
        before=("faasd.service",),
        reload=True,
        service=(("DynamicUser", "yes"), ("EnvironmentFile", VM_ENV)),
    )


def _puller_argv(opts: VmUnits, command: str) -> list[str]:
    return [
        opts.bin,
        "prepull",
        command,
        "--cache",
        opts.cache_url,
        "--mirror-host",
        opts.local_registry,
        "--runtime",
        opts.runtime,
        "--address",
        _address(opts),
        "--namespace",
        opts.namespace,
        "--limit",
        str(opts.limit),
        "--budget",
        opts.budget,
    ]


def _address(opts: VmUnits) -> str:
    if opts.runtime == "docker":
        return f"unix://{opts.address or '/run/docker.sock'}"
    return opts.address or "/run/containerd/containerd.sock"


def _runtime_unit(opts: VmUnits) -> str:
    return "docker.service" if opts.runtime == "docker" else "containerd.service"


def prepull_unit(opts: VmUnits) -> Unit:
    """The prepull agent: the NIC's popular images into the VM's runtime, by digest."""
    return Unit(
        name=PREPULL_UNIT,
        description="faas-accel prepull (holds the NIC's popular images in this VM's runtime)",
        argv=[*_puller_argv(opts, "run"), "--interval", "60s"],
        after=("network-online.target", _runtime_unit(opts), HOOK_UNIT),
        service=(("EnvironmentFile", VM_ENV), ("StateDirectory", "faas-accel")),
    )


def fanout_unit(opts: VmUnits) -> Unit:
    """The fan-out agent: pulls what other VMs just deployed (the NIC's deploy feed)."""
    if not opts.fanout_vm:
        raise ValueError("fan-out needs this VM's address (fanout_vm)")
    return Unit(
        name=FANOUT_UNIT,
        description="faas-accel fan-out prepull (what other VMs deployed, within a byte budget)",
        argv=[
            *_puller_argv(opts, "fanout"),
            "--vm",
            opts.fanout_vm,
            "--state",
            "/var/lib/faas-accel/prepull-fanout.json",
        ],
        after=("network-online.target", _runtime_unit(opts), HOOK_UNIT),
        service=(("EnvironmentFile", VM_ENV), ("StateDirectory", "faas-accel")),
    )


def nic_units(opts: NicUnits) -> list[Unit]:
    """Every unit of the NIC."""
    return [cache_unit(opts), prewarm_unit(opts)]


def vm_units(opts: VmUnits) -> list[Unit]:
    """Every unit of a faasd VM (fan-out only with `fanout_vm`)."""
    units = [hook_unit(opts), prepull_unit(opts)]
    return [*units, fanout_unit(opts)] if opts.fanout_vm else units
