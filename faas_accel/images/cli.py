"""`faas-accel images ...`: build the function and reference images, push them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .build import ImageBuilder, default_cache_dir, summary
from .catalog import catalog, select
from .errors import ImageBuildError
from .push import push_all


@click.group("images")
def images() -> None:
    """OCI images of the lab's functions and reference images, built from Debian
    packages and PyPI wheels (no Docker Hub, no Docker)."""


@images.command("build")
@click.option("--out", default="build/images", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="OCI layout to write")
@click.option("--only", multiple=True, metavar="NAME",
              help="build only this image (hello, faas/hello or the full name); repeatable")
@click.option("--push", "push_host", metavar="HOST:PORT", help="then push every image built to this registry")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="download and layer cache [default: $FAAS_ACCEL_CACHE or ~/.cache/faas-accel]")
@click.option("--stack", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="stack.yml listing the functions [default: the project's]")
@click.option("--rebuild", is_flag=True, help="build every layer again instead of reusing the cache")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def build(out: Path, only: tuple[str, ...], push_host: str | None, cache_dir: Path | None,
          stack: Path | None, rebuild: bool, as_json: bool) -> None:
    """Build images into one OCI layout, each tagged with its full name."""
    started = time.monotonic()
    builder = ImageBuilder(cache_dir or default_cache_dir(), reuse=not rebuild,
                           log=lambda line: click.echo(line, err=True))
    try:
        built = builder.build(out, select(catalog(stack), list(only)))
        if push_host:
            for ref in push_all(out, built, push_host):
                click.echo(f"pushed  {ref}", err=True)
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{builder.stats['built']} layer(s) built, {builder.stats['reused']} reused, "
               f"{time.monotonic() - started:.1f}s", err=True)
    if as_json:
        click.echo(json.dumps(summary(built), indent=2))
        return
    width = max(len(name) for name in built)
    click.echo(f"{'NAME':<{width}}  {'DIGEST':<71}  {'SIZE':>10}  LAYERS")
    for row in summary(built):
        size = f"{row['size'] / 1e6:.2f} MB"
        click.echo(f"{row['name']:<{width}}  {row['digest']:<71}  {size:>10}  {row['layers']}")


@images.command("list")
@click.option("--stack", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="stack.yml listing the functions [default: the project's]")
def list_images(stack: Path | None) -> None:
    """Name and description of every image the build knows."""
    try:
        specs = catalog(stack)
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    width = max(len(s.name) for s in specs)
    for spec in specs:
        click.echo(f"{spec.name:<{width}}  {len(spec.layers)} layer(s)  {spec.description}")
