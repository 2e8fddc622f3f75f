"""`faas-accel prepull once|run`: hold the NIC's popular images in this VM's runtime.

The VM's registry credential for private images (the NIC checks each client's own) is
read from `FAAS_ACCEL_REGISTRY_CREDS` (user:password) and given to `ctr --user`.
The admin token is best given in the environment, `NIC_CACHE_ADMIN_TOKEN`: a `--token`
value is visible to every user of the VM in `ps`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from nic_cache.errors import NicCacheError, RegistryError
from nic_cache.reference import HOST_RE, parse_image
from nic_cache.units import parse_duration, parse_size

from ..cacheapi import BadURL, check_url
from .fanout import Fanout
from .prepuller import ContainerdPuller, DockerPuller, Prepuller, PrepullError, Runtime, serve

CREDS_ENV = "FAAS_ACCEL_REGISTRY_CREDS"  # user:password of the VM, for ctr --user


def _images(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Normalize `--image` values, refusing what the hook could not rewrite to the mirror."""
    out = []
    for value in values:
        try:
            ref = parse_image(value)
            ref.mirror_form("mirror")  # raises for a registry with a port
        except RegistryError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from exc
        if ref.digest:
            raise click.BadParameter(
                f"{value!r}: name a tag, not a digest (prepull pulls the digest the NIC holds for it)"
            )
        out.append(str(ref))
    return tuple(out)


def _host(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not HOST_RE.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not a host[:port]")
    return value


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--cache", "cache_url", required=True, help="NIC cache URL, e.g. http://198.18.1.1:5000"
        ),
        click.option(
            "--token",
            envvar="NIC_CACHE_ADMIN_TOKEN",
            show_envvar=True,
            help="admin token; prefer the environment variable (a --token value shows in ps)",
        ),
        click.option(
            "--mirror-host",
            required=True,
            callback=_host,
            help="host[:port] the hook rewrites images to",
        ),
        click.option(
            "--runtime", type=click.Choice(["containerd", "docker"]), default="containerd", show_default=True
        ),
        click.option("--address", required=True, help="containerd socket path, or docker's unix:// URL"),
        click.option("--namespace", default="openfaas-fn", show_default=True, help="containerd namespace"),
        click.option("--hosts-dir", default=None, help="containerd hosts.toml directory (certs.d)"),
        click.option("--limit", type=click.IntRange(1), default=10, show_default=True, help="images to hold"),
        click.option(
            "--budget", default="0", show_default=True, help="bytes to hold at most, e.g. 4GiB (0: any)"
        ),
        click.option(
            "--image",
            "only",
            multiple=True,
            callback=_images,
            help="only these images (repeatable; default: any); `once` fails if one is not on the NIC",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _prepuller(kw: dict[str, Any]) -> Prepuller:
    try:
        budget = parse_size(kw["budget"])
    except (NicCacheError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from exc
    try:
        check_url(kw["cache_url"])
    except BadURL as exc:
        raise click.BadParameter(str(exc), param_hint="--cache") from exc
    runtime: Runtime
    if kw["runtime"] == "containerd":
        runtime = ContainerdPuller(kw["address"], kw["namespace"], kw["hosts_dir"],
                                   user=os.environ.get(CREDS_ENV) or None)  # fmt: skip
    else:
        runtime = DockerPuller(kw["address"])
    return Prepuller(
        kw["cache_url"],
        kw["token"],
        kw["mirror_host"],
        runtime,
        limit=kw["limit"],
        budget=budget,
        only=kw["only"],
    )


@click.group("prepull")
def prepull() -> None:
    """Pull the NIC's popular images into this VM's runtime ahead of deploys (from the NIC only).

    Images are pulled by the digest the NIC holds and named with the hook's mirror tag.
    """


@prepull.command("once")
@_options
def once_cmd(**kw: Any) -> None:
    """Pull what is missing now; print what was pulled, present, failed and missing (JSON).

    Exits 1 when a pull failed or an --image is not complete on the NIC. Each pull is logged
    on stderr as it happens.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = _prepuller(kw).once()
    except PrepullError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(asdict(result), indent=2))
    problems = []
    if result.missing:
        problems.append(f"not complete on the NIC, not pulled: {', '.join(result.missing)}")
    problems += [f"pull of {image} failed: {why}" for image, why in result.failed.items()]
    if problems:
        raise click.ClickException("\n".join(problems))


@prepull.command("run")
@_options
@click.option("--interval", default="60s", show_default=True, help="time between rounds")
def run_cmd(interval: str, **kw: Any) -> None:
    """Repeat `once` every --interval until SIGTERM/SIGINT; errors are logged, not fatal."""
    try:
        every = parse_duration(interval)
    except (NicCacheError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--interval") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    puller = _prepuller(kw)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve(puller.once, every, stop)


@prepull.command("fanout")
@_options
@click.option(
    "--vm", required=True, help="this VM as the NIC knows its deploys: its address (the hook reports from it)"
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("/var/lib/faas-accel/prepull-fanout.json"),
    show_default=True,
    help="where the images fan-out pulled (and counts against --budget) are recorded",
)
def fanout_cmd(vm: str, state_file: Path, **kw: Any) -> None:
    """Pull what other VMs just deployed (the NIC's deploy feed) within --budget, until SIGTERM.

    Least recently used images fan-out pulled make room; an image a container uses stays.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    puller = _prepuller(kw)
    agent = Fanout(puller, vm, budget=puller.budget, state_file=state_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.serve(stop)
