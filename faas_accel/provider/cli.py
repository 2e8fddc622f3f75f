"""`faas-accel provider serve`: the faas-provider under gunicorn (one worker, many threads)."""

from __future__ import annotations

from pathlib import Path

import click

from ..launch import THREADED, exec_gunicorn, gunicorn_argv
from .app import CONFIG_ENV
from .config import RUNTIMES, ProviderConfig, parse_port_range


def _port_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        return parse_port_range(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group("provider")
def provider() -> None:
    """A faas-provider with faasd's semantics (containerd or dockerd)."""


@provider.command("serve")
@click.option("--runtime", type=click.Choice(RUNTIMES), default="containerd", show_default=True)
@click.option(
    "--address",
    required=True,
    help="containerd socket path, or dockerd base URL (unix:///run/docker.sock)",
)
@click.option(
    "--namespace", default="openfaas-fn", show_default=True, help="containerd namespace for functions"
)
@click.option(
    "--hosts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="containerd hosts.toml tree used for pulls (ctr --hosts-dir)",
)
@click.option("--bind", "binds", multiple=True, default=["0.0.0.0:8081"], show_default=True)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="function records, logs and pid files; secrets in <state-dir>/secrets/<namespace>/<name>",
)
@click.option("--auth-user", default="admin", show_default=True)
@click.option(
    "--auth-password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="basic-auth password for /system/* (required unless --no-auth)",
)
@click.option("--no-auth", is_flag=True, help="serve /system/* without authentication")
@click.option(
    "--port-range",
    default="18000-18999",
    show_default=True,
    callback=_port_range,
    help="ports handed to functions (host networking)",
)
@click.option(
    "--ready-timeout", type=float, default=60.0, show_default=True, help="seconds to wait for health"
)
@click.option("--pull-timeout", type=float, default=600.0, show_default=True)
@click.option("--stop-grace", type=float, default=2.0, show_default=True, help="SIGTERM -> SIGKILL seconds")
@click.option("--invoke-timeout", type=float, default=300.0, show_default=True)
@click.option(
    "--async-workers",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="threads running /async-function/ calls",
)
@click.option(
    "--async-queue",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="async calls that may wait (more get 429)",
)
@click.option("--ctr", "ctr_path", default="ctr", show_default=True, help="the ctr binary")
@click.option("--threads", type=click.IntRange(4), default=64, show_default=True)
def serve(
    runtime: str,
    address: str,
    namespace: str,
    hosts_dir: Path | None,
    binds: tuple[str, ...],
    state_dir: Path,
    auth_user: str,
    auth_password_file: Path | None,
    no_auth: bool,
    port_range: tuple[int, int],
    ready_timeout: float,
    pull_timeout: float,
    stop_grace: float,
    invoke_timeout: float,
    async_workers: int,
    async_queue: int,
    ctr_path: str,
    threads: int,
) -> None:
    """Serve the faas-provider API with gunicorn."""
    if auth_password_file is None and not no_auth:
        raise click.UsageError("give --auth-password-file (or --no-auth)")
    if hosts_dir is not None and runtime == "docker":
        raise click.UsageError("--hosts-dir is for containerd; dockerd reads mirrors from its daemon.json")
    config = ProviderConfig(
        runtime=runtime,
        address=address,
        state_dir=state_dir.resolve(),
        namespace=namespace,
        hosts_dir=hosts_dir.resolve() if hosts_dir else None,
        auth_user=auth_user,
        auth_password_file=None if no_auth or auth_password_file is None else auth_password_file.resolve(),
        port_range=port_range,
        ready_timeout=ready_timeout,
        pull_timeout=pull_timeout,
        stop_grace=stop_grace,
        invoke_timeout=invoke_timeout,
        async_workers=async_workers,
        async_queue=async_queue,
        ctr=ctr_path,
    )
    argv = gunicorn_argv(
        "faas_accel.provider.app:from_env()",
        binds=binds,
        workers=1,  # records and locks live in the worker: never more than one
        threads=threads,
        options=[*THREADED, "--graceful-timeout", "5"],  # followed log streams never end by themselves
    )
    exec_gunicorn(argv, {CONFIG_ENV: config.to_json()})
