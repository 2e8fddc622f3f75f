"""The paper's figures as PNGs (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .tables import COLDSTART_MODES, DEPLOY_MODES, RETRIEVAL_MODES, ecdf, ok, short

COLORS = {
    "direct": "#d62728",
    "cached": "#1f77b4",
    "cached-hit": "#17becf",
    "prewarmed": "#2ca02c",
    "prepulled": "#8c564b",
    "peer": "#ff7f0e",
    "floor": "#7f7f7f",
    "tarball": "#9467bd",
    "docker-load": "#e377c2",
}


def _num(value: float | None) -> float:
    """A missing value is drawn as nothing (NaN), not as a 0 that would look best."""
    return float("nan") if value is None else float(value)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def fig4_ecdf(pulls: list[dict[str, Any]], out: Path) -> str | None:
    images = list(dict.fromkeys(r["image"] for r in pulls))
    if not images:
        return None
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 3.4), squeeze=False)
    for ax, image in zip(axes[0], images, strict=True):
        for mode in RETRIEVAL_MODES:
            secs = [r["seconds"] for r in ok(pulls) if r["image"] == image and r["mode"] == mode]
            if secs:
                xs, ys = ecdf(secs)
                ax.step(xs, ys, where="post", label=mode, color=COLORS[mode])
        ax.set_title(short(image))
        ax.set_xlabel("retrieval time (s)")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of pulls")
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Figure 4: ECDF of image retrieval time")
    return _save(fig, out / "fig4_ecdf.png")


def _bars(
    rows: list[dict[str, Any]],
    series: list[tuple[str, str, str]],
    groups: list[str],
    *,
    ylabel: str,
    title: str,
    path: Path,
) -> str:
    """Grouped bars: one group per row, one bar per (key, label, color mode) series."""
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(series)
    for i, (key, label, mode) in enumerate(series):
        vals = [_num(r.get(key)) for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], vals, width, label=label, color=COLORS[mode])
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(rows))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def fig5_retrieval(rows: list[dict[str, Any]], out: Path) -> str | None:
    if not rows:
        return None
    series = [
        ("t_fetch_s", "registry (T_fetch)", "direct"),
        ("t_load_s", "NIC cache (T_load)", "cached"),
        ("floor_s", "plain registry on NIC", "floor"),
        ("tarball_s", "docker save tarball, ctr import", "tarball"),
        ("docker_load_s", "docker save tarball, docker load", "docker-load"),
    ]
    return _bars(
        rows,
        series,
        [r["image"] for r in rows],
        ylabel="mean retrieval time (s)",
        title="Figure 5 / Table 1: image retrieval time",
        path=out / "fig5_retrieval.png",
    )


def fig6_coldstart(scale: list[dict[str, Any]], out: Path) -> str | None:
    if not scale:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in COLDSTART_MODES:
        pts = sorted(
            (r["vms"], r["cold_start_s"])
            for r in scale
            if r["mode"] == mode and r["cold_start_s"] is not None
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode, color=COLORS[mode])
    ax.set_xlabel("VMs deploying at once")
    ax.set_ylabel("mean cold start (s)")
    ax.set_xticks(sorted({r["vms"] for r in scale}))
    ax.set_ylim(bottom=0)
    ax.set_title("Figure 6: cold start vs number of VMs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out / "fig6_coldstart.png")


def fig7_traffic(traffic: list[dict[str, Any]], out: Path) -> str | None:
    if not traffic:
        return None
    modes = [m for m in COLDSTART_MODES if any(f"{m}_bytes" in r for r in traffic)]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [_num(r.get(f"{mode}_bytes")) / 1e6 for r in traffic]
        ax.bar([x + i * width for x in range(len(traffic))], vals, width, label=mode, color=COLORS[mode])
    ax.set_xticks(
        [x + width * (len(modes) - 1) / 2 for x in range(len(traffic))], [str(r["vms"]) for r in traffic]
    )
    ax.set_xlabel("VMs")
    ax.set_ylabel("upstream MB (WAN link)")
    ax.axhline(
        traffic[0]["one_copy_bytes"] / 1e6, color="black", linestyle=":", label="one copy of unique layers"
    )
    ax2 = ax.twinx()
    centers = [x + width * (len(modes) - 1) / 2 for x in range(len(traffic))]
    ax2.plot(centers, [100 * _num(r["saved"]) for r in traffic], "k--o", label="saved vs direct (%)")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("saved (%)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Figure 7: upstream bytes and saved bandwidth")
    return _save(fig, out / "fig7_traffic.png")


def deploy_plot(rows: list[dict[str, Any]], out: Path) -> str | None:
    modes = [m for m in DEPLOY_MODES if any(f"{m}_first-invoke_s" in r for r in rows)]
    if not rows or not modes:
        return None
    return _bars(
        rows,
        [(f"{m}_first-invoke_s", m, m) for m in modes],
        [r["function"] for r in rows],
        ylabel="first invoke after deploy (s)",
        title="Serverless deploy: cold start per function (1 VM)",
        path=out / "deploy.png",
    )
