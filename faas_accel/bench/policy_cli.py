"""`faas-accel bench policy`: replay an invocation trace through every cache policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nic_cache.policy import PolicyError

from .policy_report import plot, table, to_json
from .policy_sim import EXTRA_NAMES, POLICY_NAMES, ImageModel, simulate
from .trace import TraceError, load_trace


def _fractions(value: str) -> list[float]:
    try:
        caps = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected fractions like 0.1,0.3, got {value!r}") from None
    if not caps or not all(0 < c <= 1 for c in caps):
        raise click.BadParameter(f"capacities are fractions in (0, 1], got {value!r}")
    return caps


def _params(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        target, eq, raw = item.partition("=")
        policy, dot, key = target.partition(".")
        if not (eq and dot and policy and key):
            raise click.BadParameter(f"expected POLICY.NAME=VALUE, got {item!r}", param_hint="--param")
        out.setdefault(policy, {})[key] = _value(raw)
    return out


def _value(raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


@click.command("policy")
@click.option("--trace", "trace_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="a trace CSV (Azure Functions 2019 shape) or a directory holding one")
@click.option("--capacity", default="0.1,0.3", show_default=True, help="cache sizes, fractions of all bytes")
@click.option("--policies", default=",".join((*POLICY_NAMES, *EXTRA_NAMES)), show_default=True,
              help="which policies to run")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a PNG of WAN-served share against capacity")
@click.option("--param", "params", multiple=True, metavar="POLICY.NAME=VALUE",
              help="a policy parameter, e.g. predictive.max_cv=0.5 (repeatable)")
@click.option("--own-mb", type=float, default=60.0, show_default=True, help="median own-layer size")
@click.option("--own-sigma", type=float, default=1.0, show_default=True, help="log-normal sigma")
@click.option("--bases", type=int, default=8, show_default=True, help="shared base layers")
@click.option("--base-mb", type=float, default=50.0, show_default=True, help="median base-layer size")
@click.option("--base-sigma", type=float, default=0.5, show_default=True)
@click.option("--base-skew", type=float, default=1.0, show_default=True, help="Zipf exponent of base use")
@click.option("--keepalive", type=int, default=10, show_default=True, help="VM keep-alive (minutes)")
@click.option("--learn", type=int, default=720, show_default=True, help="minutes learned on, not scored")
@click.option("--prefetch-mbit", type=float, default=200.0, show_default=True, help="link share for prefetch")
@click.option("--seed", type=int, default=1, show_default=True)
def policy_cmd(trace_dir: Path, capacity: str, policies: str, as_json: bool, plot_path: Path | None,
               params: tuple[str, ...], **model_kw: Any) -> None:  # fmt: skip
    """Replay a per-minute invocation trace through the cache policies (lru, lfu, gdsf,
    s3fifo, predictive, predictive-evict = predictive without prefetch, and the offline
    Belady) and report the share of cold starts served over the WAN per capacity."""
    caps = _fractions(capacity)
    names = [n.strip() for n in policies.split(",") if n.strip()]
    known = (*POLICY_NAMES, *EXTRA_NAMES)
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise click.BadParameter(f"unknown policy {bad[0] if bad else ''!r} (known: {', '.join(known)})",
                                 param_hint="--policies")  # fmt: skip
    try:
        model = ImageModel(**model_kw)
        trace = load_trace(trace_dir)
        described, results = simulate(trace, model, caps, names, params=_params(params),
                                      progress=lambda m: click.echo(m, err=True))  # fmt: skip
    except (TraceError, PolicyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if plot_path is not None:
        plot(results, plot_path)
        click.echo(f"plot: {plot_path}", err=True)
    click.echo(json.dumps(to_json(described, results), indent=1) if as_json else table(described, results))
