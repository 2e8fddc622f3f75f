"""`faas-accel prewarm ...`: fill the NIC cache on the schedules of prewarm.yml.

`run` is the scheduler (one per cache is active: the cache grants a lease), `once` runs a
schedule now from this process, `plan` shows what the schedules would fetch without
fetching it, `check` validates the file, `status` shows what the cache knows.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from typing import Any

import click

from faas_accel.cacheapi import CacheAPI, CacheAPIError
from faas_accel.prewarm.errors import PrewarmConfigError
from faas_accel.prewarm.loader import Loaded, load_prewarm_file
from faas_accel.prewarm.plan import plan_totals
from faas_accel.prewarm.runner import run_schedule, source_images
from faas_accel.prewarm.scheduler import Scheduler
from faas_accel.prewarm.spec import Schedule
from nic_cache.units import format_size

_config = click.option("--config", "config_path", default="prewarm.yml", show_default=True,
                       type=click.Path(dir_okay=False), help="the prewarm file")  # fmt: skip
_cache = click.option("--cache", "cache_url", default=None, help="cache URL (overrides cache.url)")
_token = click.option("--token", default=None, help="admin token (overrides cache.token)")


@click.group("prewarm")
def prewarm() -> None:
    """Prewarm the NIC cache with popular, listed or stack-file images on schedules."""


def _load(config_path: str) -> Loaded:
    try:
        return load_prewarm_file(config_path)
    except PrewarmConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _api(loaded: Loaded, cache_url: str | None, token: str | None) -> CacheAPI:
    url = cache_url or loaded.spec.cache.url or os.environ.get("NIC_CACHE_URL")
    if not url:
        raise click.ClickException(f"{loaded.spec.source}: no cache to fill: set cache.url or pass --cache")
    return CacheAPI(url, token or loaded.spec.cache.token or os.environ.get("NIC_CACHE_ADMIN_TOKEN"))


@prewarm.command("run")
@_config
@_cache
@_token
@click.option("--lease-ttl", type=click.FloatRange(1), default=15.0, show_default=True,
              help="seconds a silent scheduler keeps the lease before a standby takes over")  # fmt: skip
@click.option("--log-level", default="INFO", show_default=True, help="logging level")
def run(config_path: str, cache_url: str | None, token: str | None, lease_ttl: float, log_level: str) -> None:
    """Run the scheduler: SIGHUP reloads the file (a bad one keeps the old schedules)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loaded = _load(config_path)
    api = _api(loaded, cache_url, token)
    scheduler = Scheduler(loaded, api, config_path=config_path, lease_ttl=lease_ttl)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    signal.signal(signal.SIGHUP, lambda *_: scheduler.request_reload())
    logging.getLogger(__name__).info(
        "prewarm scheduler %s: %d schedules from %s for %s",
        scheduler.holder,
        len(loaded.spec.schedules),
        config_path,
        scheduler.api.url,
    )
    scheduler.serve()


@prewarm.command("once")
@click.argument("name")
@_config
@_cache
@_token
@click.option("--json", "as_json", is_flag=True, help="print the run's result as JSON")
def once(name: str, config_path: str, cache_url: str | None, token: str | None, as_json: bool) -> None:
    """Run schedule NAME now, from this process, and print what it fetched."""
    loaded = _load(config_path)
    schedule = _schedule(loaded, name)
    api = _api(loaded, cache_url, token)
    try:
        result = run_schedule(
            schedule, api, environ=os.environ, holder=f"cli:{socket.gethostname()}:{os.getpid()}",
            trigger="manual", limits=loaded.spec.limits,
        )  # fmt: skip
    except CacheAPIError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for image in result["images"]:
            click.echo(
                f"{image['image']}: {image['state']}, {image['blobs_fetched']}/{image['blobs']} blobs "
                f"fetched ({format_size(image['bytes_fetched'])} of {format_size(image['bytes'])})"
            )
        click.echo(
            f"{name}: {result['state']}: {result['images_done']}/{result['images_total']} images, "
            f"{format_size(result['bytes_fetched'])} fetched in {result['seconds']} s"
        )
        for err in result["errors"]:
            click.echo(f"  error: {err}", err=True)
    if result["state"] != "done":
        sys.exit(1)


@prewarm.command("plan")
@click.argument("names", nargs=-1)
@_config
@_cache
@_token
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
def plan(names: tuple[str, ...], config_path: str, cache_url: str | None, token: str | None,
         as_json: bool) -> None:  # fmt: skip
    """Dry run: which images each schedule (or NAMES) would prewarm, which blobs are missing,
    how many bytes. Only manifests are fetched."""
    loaded = _load(config_path)
    api = _api(loaded, cache_url, token)
    schedules = [_schedule(loaded, n) for n in names] if names else list(loaded.spec.schedules)
    out: list[dict[str, Any]] = []
    for schedule in schedules:
        entry: dict[str, Any] = {"name": schedule.name, "trigger": schedule.trigger_text,
                                 "source": schedule.source_dict(), "images": [], "error": None}  # fmt: skip
        try:
            images = source_images(schedule, api, os.environ)
        except (PrewarmConfigError, CacheAPIError) as exc:
            entry["error"] = str(exc)
            images = []
        for image in images:
            try:
                entry["images"].append(api.plan(image, platforms=schedule.platforms))
            except CacheAPIError as exc:
                entry["images"].append({"image": image, "error": str(exc)})
        entry["totals"] = plan_totals(p for p in entry["images"] if "error" not in p)
        out.append(entry)
    everything = plan_totals(p for e in out for p in e["images"] if "error" not in p)
    if as_json:
        click.echo(json.dumps({"schedules": out, "totals": everything}, indent=2))
        return
    for e in out:
        click.echo(f"{e['name']} ({e['trigger']}): {len(e['images'])} images")
        if e["error"]:
            click.echo(f"  error: {e['error']}")
        for p in e["images"]:
            if "error" in p:
                click.echo(f"  {p['image']}: error: {p['error']}")
            else:
                missing, total = format_size(p["bytes_missing"]), format_size(p["bytes_total"])
                click.echo(f"  {p['image']}: {p['blobs_missing']}/{p['blobs_total']} blobs missing, "
                           f"{missing} of {total}")  # fmt: skip
    click.echo(f"total: {everything['blobs_missing']} blobs missing, "
               f"{format_size(everything['bytes_missing'])} to fetch "
               f"({everything['images']} images, shared blobs counted once)")  # fmt: skip


@prewarm.command("check")
@_config
def check(config_path: str) -> None:
    """Validate the prewarm file and show when each schedule runs next."""
    loaded = _load(config_path)
    now = datetime.now(UTC)
    for s in loaded.spec.schedules:
        nxt = loaded.triggers[s.name].get_next_fire_time(None, now)
        click.echo(f"{s.name}: {s.trigger_text}, next {nxt.isoformat() if nxt else 'never'}")
    click.echo(f"{config_path}: ok, {len(loaded.spec.schedules)} schedules")


@prewarm.command("status")
@_config
@_cache
@_token
def status(config_path: str, cache_url: str | None, token: str | None) -> None:
    """Show the cache's view: the scheduler holding the lease, schedules, last runs."""
    loaded = _load(config_path)
    try:
        click.echo(json.dumps(_api(loaded, cache_url, token).prewarm_status(), indent=2))
    except CacheAPIError as exc:
        raise click.ClickException(str(exc)) from exc


def _schedule(loaded: Loaded, name: str) -> Schedule:
    try:
        return loaded.spec.schedule(name)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from exc


if __name__ == "__main__":
    prewarm()
