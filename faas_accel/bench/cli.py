"""`faas-accel bench paper`, `bench report`, and `bench policy` (policy_cli.py)."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from faas_accel.lab.daemons import DaemonFailed
from faas_accel.lab.host import LabError
from faas_accel.lab.net import NetError

from .measure import BenchError
from .paper import Paper
from .policy_cli import policy_cmd
from .results import rerender, summary
from .settings import REPO, PaperSettings


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected numbers like 1,2,4,8, got {value!r}") from exc


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _need(*modules: str) -> None:
    """Refuse at once, not after the lab is up, when the `bench` extra is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"the bench needs {' and '.join(missing)}: pip install 'faas-accel[bench]'"
        )


@click.group("bench")
def bench() -> None:
    """Benchmarks on the lab (need root), and the policy trace replay (does not)."""


bench.add_command(policy_cmd)


@bench.command("paper")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output directory [default: results/<date>]",
)
@click.option("--quick", is_flag=True, help="a smoke run on one VM (seconds per section)")
@click.option("--vms", default=None, help="VM counts for Figures 6/7 [1,2,4,8]")
@click.option("--pulls", type=int, default=None, help="pulls per image per mode for Figure 4 [30]")
@click.option("--tarball-pulls", type=int, default=None, help="docker-save tarball loads per image [5]")
@click.option("--images", "ref_images", default=None, help="reference images [alpine,ubuntu,python,nginx]")
@click.option("--functions", default=None, help="functions of the stack file [all]")
@click.option("--repeats", type=int, default=None, help="deploy section runs per mode [3]")
@click.option("--invoke-seconds", type=int, default=None, help="warm-path load per gateway [20]")
@click.option("--sections", default=None, help="subset of retrieval,deploy,scale,invoke [all]")
@click.option("--wan-rate", default="1gbit", show_default=True, help="WAN bandwidth (the paper's uplink)")
@click.option("--wan-rtt", default="20ms", show_default=True, help="latency added per round trip")
@click.option("--wan-setup", default="20ms", show_default=True, help="latency added per new connection")
@click.option("--workdir", default="/var/tmp/faas-accel-lab", show_default=True)
@click.option("--keep-lab", is_flag=True, help="leave the lab up afterwards")
def paper_cmd(out: Path | None, quick: bool, **kw: Any) -> None:
    """Reproduce the AlphaBoot paper's evaluation on the lab; writes report.md, PNGs and CSVs."""
    _need("locust", "matplotlib")
    out = out or REPO / "results" / datetime.now(UTC).strftime("%Y-%m-%d")
    given: dict[str, Any] = {
        "wan_rate": kw["wan_rate"],
        "wan_rtt": kw["wan_rtt"],
        "wan_setup": kw["wan_setup"],
        "workdir": kw["workdir"],
        "keep_lab": kw["keep_lab"],
    }
    for key, conv in (("vms", _ints), ("ref_images", _names), ("functions", _names), ("sections", _names)):
        if kw[key] is not None:
            given["vm_counts" if key == "vms" else key] = conv(kw[key])
    for key in ("pulls", "tarball_pulls", "repeats", "invoke_seconds"):
        if kw[key] is not None:
            given[key] = kw[key]
    try:
        settings = PaperSettings.for_quick(out, **given) if quick else PaperSettings(out=out, **given)
        bench_run = Paper(settings, log=lambda m: click.echo(m, err=True))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        doc = bench_run.run()
    except (BenchError, LabError, NetError, DaemonFailed) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(doc))
    click.echo(f"report: {out / 'report.md'}")


@bench.command("report")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(out: Path) -> None:
    """Rebuild report.md, the PNGs and the derived CSVs of an earlier `bench paper` run."""
    _need("matplotlib")
    try:
        doc = rerender(out)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary(doc))
    click.echo(f"report: {out / 'report.md'}")
