"""The files of a `bench paper` run: CSVs, plots, results.json and report.md made from its raw
rows (`finish`), again from the files of an earlier run (`rerender`), and a terminal summary."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import report, tables
from .measure import BenchError


def finish(out: Path, raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Tables, targets, CSVs, plots, results.json and report.md from the raw rows of a run."""
    from . import plots  # matplotlib: loaded only by the bench, not by every faas-accel command

    retrieval = tables.retrieval_table(raw["pulls"], raw["sizes"])
    scale = tables.scale_table(raw["samples"], [x for x in raw["runs"] if x["phase"] == "scale"])
    traffic = tables.traffic_table(scale, raw["one_copy"], raw["images_bytes"], raw["images"])
    deploy = tables.deploy_table(raw["samples"])
    targets = tables.targets(retrieval, deploy, scale, traffic)
    targets += tables.last_hop_targets(raw["samples"], str(meta.get("settings", {}).get("wan_rate", "1gbit")))
    csvs = {
        "retrieval_pulls.csv": raw["pulls"],
        "table1_retrieval.csv": retrieval,
        "coldstart_samples.csv": raw["samples"],
        "locust_runs.csv": raw["runs"],
        "fig6_scale.csv": scale,
        "fig7_traffic.csv": traffic,
        "deploy.csv": deploy,
        "invoke.csv": raw["invoke"],
        "memory.csv": [raw["memory"]] if raw["memory"] else [],
    }
    for name, rows in csvs.items():
        write_csv(out / name, rows)
    pngs = [
        p
        for p in (
            plots.fig4_ecdf(raw["pulls"], out),
            plots.fig5_retrieval(retrieval, out),
            plots.fig6_coldstart(scale, out),
            plots.fig7_traffic(traffic, out),
            plots.deploy_plot(deploy, out),
        )
        if p
    ]
    doc = {
        **meta,
        "retrieval": retrieval,
        "scale": scale,
        "traffic": traffic,
        "deploy": deploy,
        "invoke": raw["invoke"],
        "memory": raw["memory"],
        "sizes": raw["sizes"],
        "targets": [asdict(t) for t in targets],
        "files": {"csv": sorted(csvs), "png": pngs},
        "one_copy": raw["one_copy"],
        "images": raw["images"],
        "images_bytes": raw["images_bytes"],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "report.md").write_text(report.markdown(doc))
    return doc


def rerender(out: Path) -> dict[str, Any]:
    """Rebuild tables, targets, plots and report.md of an earlier run from its CSVs and
    results.json (after a change to the report code, say); nothing is measured again."""
    try:
        old = json.loads((out / "results.json").read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{out}: no readable results.json ({exc})") from exc
    traffic = (old.get("traffic") or [{}])[0]
    raw = {
        "pulls": read_csv(out / "retrieval_pulls.csv", ints=("rep", "wan_bytes"), floats=("seconds",)),
        "samples": read_csv(
            out / "coldstart_samples.csv", ints=("users",), floats=("seconds",), jsons=("phases",)
        ),
        "runs": read_csv(out / "locust_runs.csv", ints=("users", "wan_bytes", "exit"), floats=("wall_s",)),
        "invoke": read_csv(
            out / "invoke.csv", ints=("requests", "failures", "exit"), floats=("median_ms", "p95_ms", "rps")
        ),
        "memory": old.get("memory") or {},
        "sizes": old.get("sizes") or {},
        "one_copy": old.get("one_copy", traffic.get("one_copy_bytes", 0)),
        "images_bytes": old.get("images_bytes", traffic.get("images_bytes", 0)),
        "images": old.get("images", traffic.get("images", 2)),
    }
    meta = {
        k: old.get(k, d)
        for k, d in (("started", ""), ("machine", ""), ("settings", {}), ("sections_done", []), ("error", ""))
    }
    return finish(out, raw, meta)


def read_csv(
    path: Path, *, ints: tuple[str, ...] = (), floats: tuple[str, ...] = (), jsons: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Rows written by `write_csv`, with the named columns typed again (empty cells: None).

    `jsons` names the columns that held dicts or lists (written as JSON by `write_csv`).
    """
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows: list[dict[str, Any]] = [r for r in csv.DictReader(fh) if "empty" not in r]
    for row in rows:
        for key in (*ints, *floats):
            if key in row:
                row[key] = (
                    None if row[key] in ("", None) else (int(row[key]) if key in ints else float(row[key]))
                )
        for key in jsons:
            if key in row:
                row[key] = None if row[key] in ("", None) else json.loads(row[key])
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV with the union of their keys as header (an empty file gets a header line).

    Dict and list cells are written as JSON so that `read_csv(..., jsons=...)` gets them back.
    """
    keys = list(dict.fromkeys(k for row in rows for k in row)) or ["empty"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(
            {k: json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v for k, v in row.items()}
            for row in rows
        )


def summary(doc: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = []
    for r in doc["retrieval"]:
        lines.append(
            f"{r['image']:>8}: T_fetch {report.fmt(r['t_fetch_s'])} s, T_load {report.fmt(r['t_load_s'])} s "
            f"({report.fmt(r['reduction'], '.1%')} faster; paper {report.fmt(r['paper_reduction'], '.0%')}), "
            f"floor {report.fmt(r['floor_s'])} s, tarball {report.fmt(r['tarball_s'])} s"
        )
    for r in doc["deploy"]:
        lines.append(
            f"{r['function']:>8}: first invoke direct {report.fmt(r.get('direct_first-invoke_s'))} s, "
            f"cached-hit {report.fmt(r.get('cached-hit_first-invoke_s'))} s, "
            f"prewarmed {report.fmt(r.get('prewarmed_first-invoke_s'))} s, "
            f"prepulled {report.fmt(r.get('prepulled_first-invoke_s'))} s"
        )
    for r in doc["traffic"]:
        lines.append(
            f"N={r['vms']}: upstream saved {report.fmt(r['saved'], '.1%')} (1-1/N = {r['paper_formula']:.1%})"
        )
    if doc["memory"]:
        lines.append(f"cache peak RSS {doc['memory']['peak_total_rss_mb']:.1f} MB")
    met = [t for t in doc["targets"] if t["met"] is not None]
    lines.append(f"targets met: {sum(1 for t in met if t['met'])}/{len(met)}")
    return "\n".join(lines)
