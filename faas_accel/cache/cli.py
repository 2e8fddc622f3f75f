"""`faas-accel cache ...`: run the NIC cache under gunicorn and talk to its admin API."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from typing import Any

import click

from nic_cache.app import open_store
from nic_cache.config import load_config_file
from nic_cache.errors import NicCacheError
from nic_cache.scrub import check, collect_temp
from nic_cache.units import format_size

from ..cacheapi import CacheAPI, CacheAPIError, Progress
from ..launch import exec_gunicorn, gunicorn_argv


@click.group("cache")
def cache() -> None:
    """The NIC cache: an OCI pull-through mirror shared by every VM of the server."""


@cache.command("serve")
@click.option("--config", "config_path", default="nic-cache.yml", show_default=True,
              type=click.Path(dir_okay=False), help="nic-cache.yml to load")
@click.option("--bind", default=None, help="host:port, overrides `listen`")
@click.option("--workers", type=click.IntRange(1), default=None, help="gunicorn worker processes")
@click.option("--threads", type=click.IntRange(1), default=None, help="threads per worker")
def serve(config_path: str, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Serve the registry mirror with gunicorn (threaded workers, several processes)."""
    try:
        config = load_config_file(config_path)
        open_store(config).close()  # a bad data_dir fails here, readably; the check runs after the bind
    except NicCacheError as exc:
        raise click.ClickException(str(exc)) from exc
    metrics_dir = os.path.join(config.data_dir, "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir)
    argv = gunicorn_argv(
        "nic_cache.app:from_env()",
        binds=[bind or config.listen],
        workers=workers or config.workers,
        threads=threads or config.threads,
        config="python:nic_cache.gunicorn_conf",
    )
    env = {"NIC_CACHE_CONFIG": os.path.abspath(config_path), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    exec_gunicorn(argv, env)


def _admin(url: str | None, token: str | None, timeout: float = 30.0) -> CacheAPI:
    base = url or os.environ.get("NIC_CACHE_URL") or "http://127.0.0.1:5000"
    try:
        return CacheAPI(base, token or os.environ.get("NIC_CACHE_ADMIN_TOKEN"), timeout=timeout)
    except CacheAPIError as exc:
        raise click.ClickException(exc.reason) from exc


_url_opt = click.option("--url", default=None, help="cache URL [env NIC_CACHE_URL, http://127.0.0.1:5000]")
_token_opt = click.option("--token", default=None, help="admin token [env NIC_CACHE_ADMIN_TOKEN]")

PROGRESS_EVERY = 2.0  # seconds between progress lines of a prefetch


@cache.command("prefetch")
@click.argument("image")
@click.option("--platform", "platforms", multiple=True, help="os/arch to fill from an index")
@click.option("--wait", type=float, default=600, show_default=True, help="seconds to wait")
@click.option("--quiet", is_flag=True, help="no progress lines, only the result")
@_url_opt
@_token_opt
def prefetch(
    image: str, platforms: tuple[str, ...], wait: float, quiet: bool, url: str | None, token: str | None
) -> None:
    """Fill IMAGE into the cache (manifests and every blob), showing progress on stderr."""
    with _admin(url, token) as api, _admin(url, token) as poll:
        try:
            # the plan (a dry run) fails fast on a wrong URL, token or image, and sizes the progress
            plan = api.plan(image, platforms=platforms, wait=60.0)
        except CacheAPIError as exc:
            raise click.ClickException(exc.reason) from exc
        if not quiet:
            click.echo(
                f"{image}: {plan['blobs_missing']} of {plan['blobs_total']} blobs to fetch "
                f"({format_size(plan['bytes_missing'])} of {format_size(plan['bytes_total'])})",
                err=True,
            )
        outcome: list[Progress | CacheAPIError] = []

        def run() -> None:
            try:
                outcome.append(api.prefetch(image, wait=wait, platforms=platforms))
            except CacheAPIError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run, name="prefetch", daemon=True)
        worker.start()
        while not quiet and worker.is_alive() and plan["blobs_missing"]:
            worker.join(PROGRESS_EVERY)
            if worker.is_alive():
                _progress(poll, image, platforms, plan)
        worker.join()
    (res,) = outcome
    if isinstance(res, CacheAPIError):
        raise click.ClickException(res.reason) from res
    click.echo(
        f"{res.image}: {res.state} — {res.blobs_done}/{res.blobs_total} blobs, "
        f"{format_size(res.bytes_done)} of {format_size(res.bytes_total)} "
        f"({res.blobs_cached_before} already cached) in {res.seconds} s"
    )
    for err in res.errors:
        click.echo(f"  error: {err}", err=True)
    if res.state == "failed":
        sys.exit(1)


def _progress(api: CacheAPI, image: str, platforms: tuple[str, ...], plan: dict[str, Any]) -> None:
    """One progress line: blobs and bytes stored since the prefetch began."""
    try:
        now = api.plan(image, platforms=platforms, wait=30.0)
    except CacheAPIError as exc:
        click.echo(f"{image}: (progress unavailable: {exc.reason})", err=True)
        return
    done = plan["bytes_missing"] - now["bytes_missing"]
    blobs = plan["blobs_missing"] - now["blobs_missing"]
    share = done / plan["bytes_missing"] if plan["bytes_missing"] else 1.0
    click.echo(
        f"{image}: {share:5.1%} — {blobs}/{plan['blobs_missing']} blobs, "
        f"{format_size(done)} of {format_size(plan['bytes_missing'])}",
        err=True,
    )


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@_url_opt
@_token_opt
def ls(as_json: bool, url: str | None, token: str | None) -> None:
    """List cached images."""
    try:
        with _admin(url, token) as api:
            if as_json:  # the cache's own document, every field of it
                click.echo(json.dumps(api.call("GET", "images"), indent=2))
                return
            rows = api.images()
    except CacheAPIError as exc:
        raise click.ClickException(exc.reason) from exc
    width = max([len(r.image) for r in rows] + [5])
    click.echo(f"{'IMAGE':<{width}}  {'DIGEST':<19}  {'SIZE':>10}  BLOBS  PINNED")
    for r in rows:
        click.echo(
            f"{r.image:<{width}}  {(r.digest or '')[:19]}  {format_size(r.bytes_stored):>10}  "
            f"{r.blobs_stored}/{r.blobs_known:<3}  {'yes' if r.pinned else 'no'}"
        )


@cache.command("verify")
@click.option("--config", "config_path", default="nic-cache.yml", show_default=True,
              type=click.Path(dir_okay=False), help="nic-cache.yml naming the data_dir")
@click.option("--sizes-only", is_flag=True, help="compare sizes only (fast), not sha256 digests")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def verify(config_path: str, sizes_only: bool, as_json: bool) -> None:
    """Scrub the store: hash every blob, quarantine a bad one (it is refetched on demand).

    Safe on a running cache. Exits 1 when something was quarantined.
    """
    try:
        config = load_config_file(config_path)
        store = open_store(config)
        try:
            report = check(store, digests=not sizes_only)
            collected = collect_temp(store)
        finally:
            store.close()
    except NicCacheError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "collected": collected}, indent=2))
    else:
        click.echo(
            f"checked {report.checked} blobs ({format_size(report.bytes)}, "
            f"{'sizes' if sizes_only else 'sha256'}): {len(report.quarantined)} quarantined, "
            f"{report.dropped} missing from disk, {report.adopted} adopted, "
            f"{len(collected)} leftover temp/lock files collected"
        )
        for line in report.problems:
            click.echo(f"  {line}")
    if report.quarantined:
        sys.exit(1)
