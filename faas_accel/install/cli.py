"""`faas-accel install nic|vm|kubernetes`: what an operator installs, as a reviewable plan."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .apply import describe, next_steps, reader, write
from .errors import InstallError
from .kubernetes import load_values, render
from .plan import FAASD_COMPOSE, NicOptions, Plan, VmOptions, nic_plan, vm_plan


def default_bin() -> str:
    """The faas-accel that runs this command (units run the same installation)."""
    beside = Path(sys.executable).with_name("faas-accel")
    if beside.exists():
        return str(beside)
    return shutil.which("faas-accel") or "/usr/local/bin/faas-accel"


def _token(token_file: Path | None) -> str | None:
    if token_file is None:
        return os.environ.get("NIC_CACHE_ADMIN_TOKEN") or None
    try:
        text = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read --token-file {token_file}: {exc.strerror}") from exc
    # accept nic.env itself: NIC_CACHE_ADMIN_TOKEN=... among comments
    for line in text.splitlines():
        if line.startswith("NIC_CACHE_ADMIN_TOKEN="):
            return line.partition("=")[2].strip()
    if not text or "\n" in text:
        raise click.ClickException(f"--token-file {token_file}: expected the token alone, or a nic.env")
    return text


_root = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="write under this directory instead of /",
)
_dry = click.option("--dry-run", is_flag=True, help="print the plan; write nothing")
_bin = click.option(
    "--bin",
    "bin_path",
    default=None,
    help="faas-accel executable the units run [default: the one running this]",
)
_token_file = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="the admin token (or the NIC's nic.env) [env NIC_CACHE_ADMIN_TOKEN]",
)


@click.group("install")
def install() -> None:
    """Install faas-accel on a NIC or a faasd VM (systemd), or render Kubernetes manifests."""


@install.command("nic")
@click.option("--listen", default="0.0.0.0:5000", show_default=True, help="where the cache listens")
@click.option("--data-dir", default="/var/lib/nic-cache", show_default=True, help="the blob store")
@click.option("--capacity", default="20GiB", show_default=True, help="the store's byte budget")
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    default=("docker.io",),
    show_default=True,
    metavar="HOST[=URL]",
    help="an upstream registry (repeatable)",
)
@_token_file
@_bin
@_root
@_dry
def nic(
    listen: str,
    data_dir: str,
    capacity: str,
    upstreams: tuple[str, ...],
    token_file: Path | None,
    bin_path: str | None,
    root: Path,
    dry_run: bool,
) -> None:
    """The NIC cache and the prewarm scheduler as systemd services, with their config and a
    generated admin token (kept if nic.env exists)."""
    opts = NicOptions(
        bin=bin_path or default_bin(),
        listen=listen,
        data_dir=data_dir,
        capacity=capacity,
        upstreams=upstreams,
        token=_token(token_file),
    )
    _run(lambda: nic_plan(opts, reader(root)), root, dry_run)


@install.command("vm")
@click.option("--cache", "cache_url", required=True, help="the NIC cache as this VM reaches it")
@click.option(
    "--registry",
    "registries",
    multiple=True,
    default=("docker.io",),
    show_default=True,
    metavar="HOST[=URL]",
    help="a registry to pull through the NIC (repeatable)",
)
@click.option(
    "--runtime",
    type=click.Choice(["containerd", "docker"]),
    default="containerd",
    show_default=True,
    help="the VM's runtime (faasd: containerd)",
)
@click.option(
    "--hook-port",
    type=click.IntRange(1, 65535),
    default=8082,
    show_default=True,
    help="where faasd's gateway reaches the hook (faasd-provider keeps 8081)",
)
@click.option(
    "--fanout-vm", default=None, help="this VM's address as the NIC sees it: adds the fan-out agent"
)
@click.option("--faasd-compose", default=FAASD_COMPOSE, show_default=True, help="faasd's compose file")
@_token_file
@_bin
@_root
@_dry
def vm(
    cache_url: str,
    registries: tuple[str, ...],
    runtime: str,
    hook_port: int,
    fanout_vm: str | None,
    faasd_compose: str,
    token_file: Path | None,
    bin_path: str | None,
    root: Path,
    dry_run: bool,
) -> None:
    """The hook in front of faasd-provider and the prepull agent as systemd services, the
    runtime's mirror config, and faasd's gateway pointed at the hook."""
    opts = VmOptions(
        bin=bin_path or default_bin(),
        cache_url=cache_url,
        registries=registries,
        runtime=runtime,
        hook_port=hook_port,
        fanout_vm=fanout_vm,
        token=_token(token_file),
        faasd_compose=faasd_compose,
    )
    _run(lambda: vm_plan(opts, reader(root)), root, dry_run)


@install.command("kubernetes")
@click.option(
    "--values",
    "values_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the values file (see deploy/kubernetes/values.yaml)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="write faas-accel.yaml and gateway-patch.yaml here (default: print both)",
)
def kubernetes(values_path: Path, out: Path | None) -> None:
    """Render the faas-netes manifests: `kubectl apply -f faas-accel.yaml`, then
    `kubectl -n openfaas patch deployment gateway --patch-file gateway-patch.yaml`."""
    try:
        files = render(load_values(values_path))
    except InstallError as exc:
        raise click.ClickException(str(exc)) from exc
    if out is None:
        for name, text in files.items():
            click.echo(f"# ---- {name}\n{text}", nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out / name}")


def _run(make: Callable[[], Plan], root: Path, dry_run: bool) -> None:
    try:
        plan = make()
        for line in describe(plan, root, dry_run=dry_run):
            click.echo(line)
        if not dry_run:
            for line in write(plan, root):
                click.echo(line)
        for line in next_steps(plan, dry_run=dry_run):
            click.echo(line)
    except InstallError as exc:
        raise click.ClickException(str(exc)) from exc
