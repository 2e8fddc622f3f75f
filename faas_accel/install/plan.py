"""The files `faas-accel install nic|vm` writes, planned without touching the disk.

A plan is a list of `Planned` files plus the commands the operator runs afterwards. Each
file has a policy: `replace` (ours: units, sysusers/tmpfiles entries, hosts.toml), `merge`
(someone else's file we change one thing in: daemon.json, faasd's docker-compose.yaml) or
`keep` (written only when missing: configuration and secrets the operator edits). Reading
goes through `read(path) -> text | None`, so the plan is the same for `/` and for a test's
temporary root.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from ..mirror_config import plan as mirror_config
from .errors import InvalidValue, UnsafeToEdit
from .systemd import ETC, NIC_ENV, UNIT_DIR, USER, VM_ENV, NicUnits, VmUnits, nic_units, vm_units

Read = Callable[[str], "str | None"]
Policy = Literal["replace", "merge", "keep"]
FAASD_COMPOSE = "/var/lib/faasd/docker-compose.yaml"
FAASD_PROVIDER_HOST = "faasd-provider"  # faasd maps it to the host (10.62.0.1) in its containers
_PROVIDER_URL_RE = re.compile(r"^(\s*-\s*[\"']?functions_provider_url=)([^\s\"']*)", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Planned:
    """One file: what it holds now, what it will hold, and how to show it."""

    path: str  # absolute, as on the target machine
    old: str | None
    new: str
    mode: int = 0o644
    policy: Policy = "replace"
    secret: bool = False  # never print its values
    why: str = ""

    @property
    def changed(self) -> bool:
        """Whether writing would change anything (a kept file that exists never changes)."""
        if self.policy == "keep" and self.old is not None:
            return False
        return self.old != self.new


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Every file of an installation and what to run after writing them."""

    target: str  # "nic" or "vm"
    files: list[Planned]
    then: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class NicOptions:
    """`faas-accel install nic`."""

    bin: str
    listen: str = "0.0.0.0:5000"
    data_dir: str = "/var/lib/nic-cache"
    capacity: str = "20GiB"
    upstreams: Sequence[str] = ("docker.io",)  # HOST or HOST=URL
    token: str | None = None  # None: generate one (only if nic.env is new)


@dataclass(frozen=True, kw_only=True)
class VmOptions:
    """`faas-accel install vm`."""

    bin: str
    cache_url: str
    registries: Sequence[str] = ("docker.io",)
    runtime: str = "containerd"
    hook_port: int = 8082
    fanout_vm: str | None = None
    token: str | None = None
    faasd_compose: str = FAASD_COMPOSE
    hosts_dir: str = "/etc/containerd/certs.d"
    daemon_json: str = "/etc/docker/daemon.json"


def nic_plan(opts: NicOptions, read: Read) -> Plan:
    """The NIC: sysusers + tmpfiles entries, config files, env file, two units."""
    try:
        registries = mirror_config.parse_registries(opts.upstreams)
    except mirror_config.InvalidArgument as exc:
        raise InvalidValue(f"--upstream: {exc}") from exc
    units = nic_units(NicUnits(bin=opts.bin, data_dir=opts.data_dir))
    token = opts.token or secrets.token_urlsafe(32)
    files = [
        _file(
            read,
            "/etc/sysusers.d/faas-accel.conf",
            f'u {USER} - "faas-accel NIC cache" {opts.data_dir} -\n',
            why="the cache's system user",
        ),
        _file(
            read,
            "/etc/tmpfiles.d/faas-accel.conf",
            f"d {opts.data_dir} 0750 {USER} {USER} -\n",
            why="the cache's data directory",
        ),
        _file(
            read,
            f"{ETC}/nic-cache.yml",
            _cache_config(opts, registries),
            policy="keep",
            why="the cache's configuration (edit upstreams and capacity here)",
        ),
        _file(read, f"{ETC}/prewarm.yml", _prewarm_config(opts), policy="keep", why="prewarm schedules"),
        _file(
            read,
            NIC_ENV,
            f"# secrets of the NIC's units (root only)\nNIC_CACHE_ADMIN_TOKEN={token}\n",
            mode=0o600,
            policy="keep",
            secret=True,
            why="the admin token (the VMs need the same)",
        ),
    ]
    files += [_file(read, f"{UNIT_DIR}/{u.name}", u.render(), why=u.description) for u in units]
    names = " ".join(u.name for u in units)
    return Plan(
        target="nic",
        files=files,
        then=[
            "systemd-sysusers /etc/sysusers.d/faas-accel.conf",
            "systemd-tmpfiles --create /etc/tmpfiles.d/faas-accel.conf",
            "systemctl daemon-reload",
            f"systemctl enable --now {names}",
            f"grep NIC_CACHE_ADMIN_TOKEN {NIC_ENV}   # give this token to every VM (install vm --token-file)",
        ],
    )


def vm_plan(opts: VmOptions, read: Read) -> Plan:
    """A faasd VM: env file, hook and prepull units, the runtime's mirror config, faasd's
    gateway pointed at the hook."""
    try:
        mirror = mirror_config.parse_mirror(opts.cache_url)
        registries = mirror_config.parse_registries(opts.registries)
    except mirror_config.InvalidArgument as exc:
        raise InvalidValue(str(exc)) from exc
    if opts.runtime not in ("containerd", "docker"):
        raise InvalidValue(f"--runtime must be containerd or docker, got {opts.runtime!r}")
    units = vm_units(
        VmUnits(
            bin=opts.bin,
            cache_url=mirror.url,
            hook_bind=f"0.0.0.0:{opts.hook_port}",
            runtime=opts.runtime,
            fanout_vm=opts.fanout_vm,
        )
    )
    notes = []
    env = "# secrets of the VM's units (root only)\n"
    if opts.token:
        env += f"NIC_CACHE_ADMIN_TOKEN={opts.token}\n"
    else:
        env += "# NIC_CACHE_ADMIN_TOKEN=<the NIC's, from its /etc/faas-accel/nic.env>\n"
        notes.append(f"no token given: set NIC_CACHE_ADMIN_TOKEN in {VM_ENV} before starting the units")
    env += "# FAAS_ACCEL_REGISTRY_CREDS=user:password   # prepull's credential for private images\n"
    files = [
        _file(
            read,
            VM_ENV,
            env,
            mode=0o600,
            policy="keep",
            secret=True,
            why="the NIC's admin token, the VM's registry credential",
        )
    ]
    files += [_file(read, f"{UNIT_DIR}/{u.name}", u.render(), why=u.description) for u in units]
    if opts.runtime == "containerd":
        for rel, text in mirror_config.containerd_hosts(mirror, registries).items():
            files.append(_file(read, f"{opts.hosts_dir}/{rel}", text, why="containerd pulls through the NIC"))
    else:
        files.append(
            _merged(
                read,
                opts.daemon_json,
                lambda old: mirror_config.merge_daemon_json(old, mirror),
                why="dockerd pulls docker.io through the NIC",
            )
        )
    hook_url = f"http://{FAASD_PROVIDER_HOST}:{opts.hook_port}/"
    compose = read(opts.faasd_compose)
    restart = []
    if compose is None:
        notes.append(
            f"{opts.faasd_compose} not found (faasd not installed yet?): after installing faasd, "
            f"set the gateway's functions_provider_url={hook_url} and run this again"
        )
    else:
        files.append(
            _merged(
                read,
                opts.faasd_compose,
                lambda old: point_gateway_at(old or "", hook_url),
                why="faasd's gateway calls the hook instead of faasd-provider",
            )
        )
        restart = ["systemctl restart faasd   # the gateway picks up functions_provider_url"]
    return Plan(
        target="vm",
        files=files,
        then=[
            "systemctl daemon-reload",
            f"systemctl enable --now {' '.join(u.name for u in units)}",
            *restart,
            *(
                ["systemctl restart docker   # dockerd reads daemon.json at start"]
                if opts.runtime == "docker"
                else []
            ),
        ],
        notes=notes,
    )


def point_gateway_at(compose: str, url: str) -> str:
    """faasd's docker-compose.yaml with the gateway's `functions_provider_url` set to `url`.

    The line is edited in place, so comments and layout survive; UnsafeToEdit unless the
    file is YAML whose `services.gateway.environment` list sets the variable exactly once.
    """
    try:
        doc = yaml.safe_load(compose)
    except yaml.YAMLError as exc:
        raise UnsafeToEdit(f"it is not valid YAML ({exc})") from None
    env = (
        ((doc or {}).get("services") or {}).get("gateway", {}).get("environment")
        if isinstance(doc, dict)
        else None
    )
    if not isinstance(env, list) or not any(str(e).startswith("functions_provider_url=") for e in env):
        raise UnsafeToEdit("services.gateway.environment has no functions_provider_url= entry")
    matches = _PROVIDER_URL_RE.findall(compose)
    if len(matches) != 1:
        raise UnsafeToEdit(f"functions_provider_url= appears {len(matches)} times, expected once")
    return _PROVIDER_URL_RE.sub(lambda m: m.group(1) + url, compose)


def _file(
    read: Read,
    path: str,
    new: str,
    *,
    mode: int = 0o644,
    policy: Policy = "replace",
    secret: bool = False,
    why: str = "",
) -> Planned:
    return Planned(path=path, old=read(path), new=new, mode=mode, policy=policy, secret=secret, why=why)


def _merged(read: Read, path: str, merge: Callable[[str | None], str], *, why: str) -> Planned:
    old = read(path)
    try:
        new = merge(old)
    except (mirror_config.UnsafeToEdit, UnsafeToEdit) as exc:
        raise UnsafeToEdit(f"refusing to change {path}: {exc}; left it untouched") from None
    return Planned(path=path, old=old, new=new, policy="merge", why=why)


def _cache_config(opts: NicOptions, registries: Sequence[mirror_config.Registry]) -> str:
    ups = "\n".join(f"  {r.host}: {{url: {r.server}}}" for r in registries)
    return f"""\
# The NIC cache (faas-accel cache serve); reference: the README's "Configuration reference".
listen: {opts.listen}
data_dir: {opts.data_dir}
capacity: {opts.capacity}
admin_token: ${{NIC_CACHE_ADMIN_TOKEN}}   # from /etc/faas-accel/nic.env
default_upstream: {registries[0].host}
upstreams:
{ups}
status_page: token                    # /status needs the admin token (open: anyone; off: none)
"""


def _prewarm_config(opts: NicOptions) -> str:
    port = opts.listen.rpartition(":")[2]
    return f"""\
# Prewarm schedules (faas-accel prewarm run); reference: the README's "Prewarming".
cache:
  url: http://127.0.0.1:{port}
  token: ${{NIC_CACHE_ADMIN_TOKEN}}       # from /etc/faas-accel/nic.env
limits: {{concurrency: 2, bandwidth: 400Mbit}}
schedules:
  - name: nightly-top
    cron: "0 3 * * *"
    jitter: 5m
    source: {{popular: {{top: 20, window: 7d, min_pulls: 3}}}}
"""
