"""The `faas-accel` command line."""

from __future__ import annotations

import click

from . import __version__
from .bench.cli import bench
from .cache.cli import cache
from .hook.cli import hook
from .images.cli import images
from .install.cli import install
from .lab.cli import lab
from .mirror_config.cli import mirror_config
from .prepull.cli import prepull
from .prewarm.cli import prewarm
from .provider.cli import provider


@click.group()
@click.version_option(__version__, prog_name="faas-accel")
def main() -> None:
    """faas-accel: a SmartNIC image cache for OpenFaaS cold starts."""


main.add_command(bench)
main.add_command(cache)
main.add_command(hook)
main.add_command(lab)
main.add_command(images)
main.add_command(install)
main.add_command(provider)
main.add_command(prewarm)
main.add_command(prepull)
main.add_command(mirror_config)


if __name__ == "__main__":
    main()
