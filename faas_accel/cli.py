"""The `faas-accel` command line."""

from __future__ import annotations

import click

from . import __version__
from .cache_cli import cache


@click.group()
@click.version_option(__version__, prog_name="faas-accel")
def main() -> None:
    """faas-accel: a SmartNIC image cache for OpenFaaS cold starts."""


main.add_command(cache)
