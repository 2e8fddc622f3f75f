"""`faas-accel prepull once|run`: hold the NIC's popular images in this VM's runtime."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click

from nic_cache.errors import NicCacheError
from nic_cache.units import parse_duration, parse_size

from .prepull import ContainerdPuller, DockerPuller, Prepuller, PrepullError, Runtime


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--cache", "cache_url", required=True, help="NIC cache URL, e.g. http://198.18.1.1:5000"
        ),
        click.option("--token", default=lambda: os.environ.get("NIC_CACHE_ADMIN_TOKEN"), help="admin token"),
        click.option("--mirror-host", required=True, help="host[:port] the hook rewrites images to"),
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
        click.option("--image", "only", multiple=True, help="only these images (repeatable; default: any)"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _prepuller(kw: dict[str, Any]) -> Prepuller:
    try:
        budget = parse_size(kw["budget"])
    except (NicCacheError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--budget") from exc
    runtime: Runtime
    if kw["runtime"] == "containerd":
        runtime = ContainerdPuller(kw["address"], kw["namespace"], kw["hosts_dir"])
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
    """Pull the NIC's popular images into this VM's runtime ahead of deploys (from the NIC only)."""


@prepull.command("once")
@_options
def once_cmd(**kw: Any) -> None:
    """Pull what is missing now; print what was pulled, present and failed (JSON)."""
    try:
        result = _prepuller(kw).once()
    except PrepullError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(asdict(result), indent=2))
    if result.failed:
        raise SystemExit(1)


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
    log = logging.getLogger("faas_accel.prepull")
    while not stop.is_set():
        try:
            r = puller.once()
            log.info(
                "round: %d pulled, %d present, %d failed in %.1f s",
                len(r.pulled),
                len(r.present),
                len(r.failed),
                r.seconds,
            )
        except PrepullError as exc:
            log.warning("round failed: %s", exc)
        stop.wait(every)
