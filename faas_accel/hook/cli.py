"""`faas-accel hook serve`: the hook under gunicorn."""

from __future__ import annotations

import click

from ..launch import THREADED, exec_gunicorn, gunicorn_argv


@click.group("hook")
def hook() -> None:
    """The OpenFaaS image hook (a faas-provider API proxy)."""


@hook.command("serve")
@click.option(
    "--provider", required=True, help="faas-provider URL the hook fronts, e.g. http://127.0.0.1:8081"
)
@click.option("--cache", "cache_url", default=None, help="NIC cache URL (omit: plain proxy, no acceleration)")
@click.option("--token", default=None, envvar="NIC_CACHE_ADMIN_TOKEN", help="NIC cache admin token")
@click.option(
    "--bind",
    "binds",
    multiple=True,
    default=["0.0.0.0:8080"],
    show_default=True,
    help="address to serve the provider API on (repeatable)",
)
@click.option(
    "--local-registry",
    default=None,
    help="also serve /v2/ here (e.g. 127.0.0.1:5000) and rewrite images to it (faasd pulls plain "
    "HTTP only from localhost)",
)
@click.option(
    "--mirror-host", default=None, help="host:port written into rewritten images (default: the cache's)"
)
@click.option(
    "--prefetch-wait",
    type=float,
    default=0.25,
    show_default=True,
    help="seconds a deploy waits for its prefetch before going on; the runtime's pull then joins the "
    "fill in flight and streams as bytes land (a long wait serializes WAN and VM pull)",
)
@click.option("--allow", multiple=True, help="registry to accelerate (repeatable; default: all)")
@click.option("--deny", multiple=True, help="registry never accelerated (repeatable)")
@click.option("--workers", type=click.IntRange(1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=32, show_default=True)
def serve(
    provider: str,
    cache_url: str | None,
    token: str | None,
    binds: tuple[str, ...],
    local_registry: str | None,
    mirror_host: str | None,
    prefetch_wait: float,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    workers: int,
    threads: int,
) -> None:
    """Serve the hook with gunicorn."""
    if local_registry and not cache_url:
        raise click.UsageError("--local-registry needs --cache")
    env = {
        "FAAS_ACCEL_HOOK_PROVIDER": provider,
        "FAAS_ACCEL_HOOK_CACHE": cache_url or "",
        "FAAS_ACCEL_HOOK_TOKEN": token or "",
        "FAAS_ACCEL_HOOK_MIRROR_HOST": mirror_host or local_registry or "",
        "FAAS_ACCEL_HOOK_PREFETCH_WAIT": str(prefetch_wait),
        "FAAS_ACCEL_HOOK_ALLOW": ",".join(allow),
        "FAAS_ACCEL_HOOK_DENY": ",".join(deny),
    }
    argv = gunicorn_argv(
        "faas_accel.hook.app:from_env()",
        binds=[*binds, *([local_registry] if local_registry else [])],
        workers=workers,
        threads=threads,
        options=THREADED,
    )
    exec_gunicorn(argv, env)
