"""`faas-accel lab up|status|down|demo`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from faas_accel.images.errors import ImageBuildError

from .daemons import DaemonFailed
from .guide import next_steps
from .host import LabError, check_host
from .lab import down, status, up
from .net import NetError
from .seed import ensure_stack_seeded, stack_functions
from .spec import LabSpec

REPO = Path(__file__).resolve().parents[2]


def _spec_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--vms", type=int, default=None, help="number of VMs [up: 2, demo: 4]"),
        click.option(
            "--runtime", type=click.Choice(["containerd", "docker"]), default="containerd", show_default=True
        ),
        click.option("--wan-rate", default="1gbit", show_default=True, help="WAN bandwidth (tc tbf)"),
        click.option("--wan-rtt", default="20ms", show_default=True, help="latency added per round trip"),
        click.option(
            "--wan-setup", default="20ms", show_default=True, help="latency added per new connection"
        ),
        click.option("--vm-link", default=None, help="shape NIC<->VM links, e.g. 25gbit (default: unshaped)"),
        click.option("--nic-cpus", default=None, help="pin the cache to these CPUs, e.g. 0"),
        click.option(
            "--vm-disk",
            type=click.Choice(["tmpfs", "disk"]),
            default="tmpfs",
            show_default=True,
            help="VM image stores in RAM (like a local NVMe) or on this machine's disk",
        ),
        click.option("--no-accel", is_flag=True, help="no hook: VMs pull straight from the internet"),
        click.option(
            "--prepull",
            type=int,
            default=0,
            show_default=True,
            help="each VM holds the NIC's N most popular images (faas-accel prepull run; 0: off)",
        ),
        click.option(
            "--fanout/--no-fanout",
            default=True,
            show_default=True,
            help="with the hook: each VM pulls what other VMs deploy (faas-accel prepull fanout)",
        ),
        click.option("--fanout-budget", default="4GiB", show_default=True, help="VM bytes fan-out may use"),
        click.option(
            "--transcode",
            type=click.Choice(["zstd", "tar", "off"]),
            default="zstd",
            show_default=True,
            help="how the NIC re-encodes stored layers for the VMs",
        ),
        click.option("--workdir", default="/var/tmp/faas-accel-lab", show_default=True),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _spec(kw: dict[str, Any], default_vms: int = 2) -> LabSpec:
    try:
        return LabSpec(
            vms=default_vms if kw["vms"] is None else kw["vms"],
            runtime=kw["runtime"],
            wan_rate=kw["wan_rate"],
            wan_rtt=kw["wan_rtt"],
            wan_setup=kw["wan_setup"],
            vm_link=kw["vm_link"],
            nic_cpus=kw["nic_cpus"],
            vm_disk=kw["vm_disk"],
            prepull=kw["prepull"],
            fanout=kw["fanout"],
            fanout_budget=kw["fanout_budget"],
            transcode=kw["transcode"],
            accel=not kw["no_accel"],
            workdir=kw["workdir"],
        ).validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _run(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (LabError, NetError, DaemonFailed, ImageBuildError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("lab")
def lab() -> None:
    """A whole server on this machine: N VMs, a SmartNIC and the internet (needs root)."""


@lab.command("up")
@_spec_options
@click.option(
    "--stack",
    "stack_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=REPO / "stack.yml",
    show_default=True,
    help="build and seed this stack's images when the lab's internet registry lacks them",
)
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO / "build",
    show_default=True,
    help="image layouts and the build cache",
)
@click.option("--no-seed", is_flag=True, help="do not build or seed the stack's images")
@click.option("--json", "as_json", is_flag=True, help="print the lab's status as JSON instead of next steps")
def up_cmd(stack_file: Path, build_dir: Path, no_seed: bool, as_json: bool, **kw: Any) -> None:
    """Bring the lab up (idempotent), with the stack's images in its internet registry."""
    spec = _spec(kw)

    def progress(message: str) -> None:
        click.echo(message, err=True)

    if not no_seed:
        if not stack_file.is_file():
            raise click.UsageError(f"no stack file at {stack_file}: pass --stack FILE, or --no-seed")
        check_host(spec)  # before a build: root and the programs seeding needs
        _run(lambda: ensure_stack_seeded(Path(spec.workdir) / "seed", stack_file, build_dir, log=progress))
    doc = _run(lambda: up(spec, log=progress))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    functions = list(stack_functions(stack_file)) if stack_file.is_file() else []
    for line in next_steps(doc, stack_file.resolve(), functions):
        click.echo(line)


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@click.option("--workdir", default="/var/tmp/faas-accel-lab", show_default=True)
def status_cmd(as_json: bool, workdir: str) -> None:
    """Show the lab: namespaces, addresses, URLs, credentials, processes."""
    doc = status(LabSpec(workdir=workdir))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"lab: {'up' if doc['up'] else 'down'}; namespaces: {', '.join(doc['namespaces']) or 'none'}")
    click.echo(
        f"WAN: {doc['wan']['rate']}, +{doc['wan']['rtt']} per round trip, "
        f"+{doc['wan']['setup']} per connection"
    )
    click.echo(f"NIC cache: {doc['nic']['cache_url']} (upstream {doc['nic']['upstream_url']})")
    for vm in doc["vms"]:
        click.echo(
            f"  {vm['name']}: gateway {vm['gateway_url']} ({vm['auth']['user']}:{vm['auth']['password']}), "
            f"runtime {vm['runtime']} at {vm['runtime_socket']}"
        )


@lab.command("down")
@click.option("--workdir", default="/var/tmp/faas-accel-lab", show_default=True)
def down_cmd(workdir: str) -> None:
    """Tear the lab down, including whatever a crashed run left."""
    gone = _run(lambda: down(LabSpec(workdir=workdir), log=lambda m: None))
    click.echo(f"lab down: removed {len(gone)} item(s)")


@lab.command("demo")
@_spec_options
@click.option(
    "--stack", "stack_file", type=click.Path(exists=True, dir_okay=False), default=str(REPO / "stack.yml")
)
@click.option("--build-dir", type=click.Path(file_okay=False), default=str(REPO / "build"))
@click.option("--keep", is_flag=True, help="leave the lab up afterwards")
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the numbers as JSON (per function: direct, cached, cached_vm1, cached_rest, "
    "prepulled_floor, phases; wan; cost; targets)",
)
def demo_cmd(stack_file: str, build_dir: str, keep: bool, report_file: Path | None, **kw: Any) -> None:
    """Deploy every function to every VM, direct vs through the NIC cache, and compare."""
    from .demo import run_demo

    spec = _spec(kw, default_vms=4)
    _run(
        lambda: run_demo(
            spec,
            Path(stack_file),
            build_dir=Path(build_dir),
            keep=keep,
            report_file=report_file,
            log=click.echo,
        )
    )
