"""`faas-accel bench paper --quick` and the locust files on a real 1-VM lab (seconds, not minutes).

One quick bench run brings the lab up (and leaves it up for the locust checks); the fixture's
finalizer takes it down whatever happens. Numbers are checked for sanity, not for speed.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faas_accel.lab import lab, net
from faas_accel.lab.spec import LabSpec
from tests.conftest import require

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
FA = [sys.executable, "-m", "faas_accel"]


def locust(locustfile: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`locust -f load/<locustfile> ARGS` (headless by the file's own defaults)."""
    argv = [sys.executable, "-m", "locust", "-f", str(REPO / "load" / locustfile), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LabSpec]]:
    """`bench paper --quick` run once into a temp dir, the lab kept for the locust tests."""
    require("ip", "tc", "nsenter", "containerd", "ctr", "runc", "docker-registry", "skopeo", "curl")
    if net.lab_namespaces():
        pytest.skip("a lab is already up on this machine (faas-accel lab down first)")
    base = tmp_path_factory.mktemp("bench")
    out, work = base / "out", base / "lab"
    spec = LabSpec(vms=1, workdir=str(work))
    try:
        result = subprocess.run(
            [*FA, "bench", "paper", "--quick", "--out", str(out), "--workdir", str(work), "--keep-lab"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (out / "stdout.txt").write_text(result.stdout)
        yield out, spec
    finally:
        lab.down(spec, log=lambda _: None)


class TestBenchPaperQuick:
    def test_report_has_every_section(self, quick: tuple[Path, LabSpec]) -> None:
        out, _ = quick
        report = (out / "report.md").read_text()
        headings = [line for line in report.splitlines() if line.startswith("## ")]
        for name in (
            "Table 1",
            "Figure 6",
            "Figure 7",
            "Serverless deploy",
            "Cache memory",
            "Warm path",
            "Targets",
        ):
            assert any(name in h for h in headings), (name, headings)
        assert "Incomplete run" not in report
        assert "**1gbit**" in report and "+20ms" in report  # the WAN settings are recorded
        for png in (
            "fig4_ecdf.png",
            "fig5_retrieval.png",
            "fig6_coldstart.png",
            "fig7_traffic.png",
            "deploy.png",
        ):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert "targets met:" in (out / "stdout.txt").read_text()

    def test_retrieval_numbers_are_sane(self, quick: tuple[Path, LabSpec]) -> None:
        out, _ = quick
        pulls = rows(out / "retrieval_pulls.csv")
        assert {p["mode"] for p in pulls} == {"direct", "cached", "floor", "tarball", "docker-load"}
        assert all(not p["error"] for p in pulls), [p["error"] for p in pulls if p["error"]]
        assert all(0 < float(p["seconds"]) < 120 for p in pulls)
        # only the direct pulls cross the WAN: the image's bytes each time, the NIC's paths none
        size = json.loads((out / "results.json").read_text())["sizes"]["registry.lab/ref/alpine:paper"]
        for p in pulls:
            wan = int(p["wan_bytes"])
            assert (size <= wan < size * 1.2) if p["mode"] == "direct" else wan < 64_000, p
        (table,) = rows(out / "table1_retrieval.csv")
        assert table["image"] == "alpine" and float(table["t_fetch_s"]) > 0 and float(table["t_load_s"]) > 0

    def test_coldstart_and_traffic(self, quick: tuple[Path, LabSpec]) -> None:
        out, _ = quick
        samples = rows(out / "coldstart_samples.csv")
        assert samples and all(not s["error"] for s in samples)
        modes = {(s["phase"], s["mode"]) for s in samples}
        assert {("deploy", m) for m in ("direct", "cached", "cached-hit", "prewarmed", "prepulled")} <= modes
        assert {("scale", m) for m in ("direct", "cached", "prewarmed", "prepulled", "peer")} <= modes
        for s in samples:  # a first invoke comes after its deploy was answered
            assert 0 < float(s["seconds"]) < 120
        runs = {(r["phase"], r["mode"]): int(r["wan_bytes"]) for r in rows(out / "locust_runs.csv")}
        (traffic,) = rows(out / "fig7_traffic.csv")
        one_copy = int(traffic["one_copy_bytes"])
        assert one_copy > 1_000_000
        assert one_copy <= runs[("scale", "cached")] < one_copy * 1.05  # one copy through an empty NIC
        assert runs[("deploy", "cached-hit")] < 64_000  # a warm NIC: nothing crosses the WAN
        for mode in ("prewarmed", "prepulled"):  # the NIC's prefetch from empty: one copy, before the run
            assert one_copy <= runs[("scale", mode)] < one_copy * 1.05, mode
        assert runs[("scale", "peer")] >= one_copy

    def test_warm_path_and_memory(self, quick: tuple[Path, LabSpec]) -> None:
        out, _ = quick
        invoke = {r["via"]: r for r in rows(out / "invoke.csv")}
        assert set(invoke) == {"provider", "hook"}
        assert all(int(r["requests"]) > 0 and int(r["failures"]) == 0 for r in invoke.values())
        (memory,) = rows(out / "memory.csv")
        assert 5 < float(memory["peak_total_rss_mb"]) < 4096 and int(memory["processes"]) >= 2

    def test_report_rebuilds_from_its_files(self, quick: tuple[Path, LabSpec], tmp_path: Path) -> None:
        """`bench report DIR` recomputes the same tables from the CSVs and results.json."""
        out, _ = quick
        copy = tmp_path / "copy"
        shutil.copytree(out, copy, ignore=shutil.ignore_patterns("locust"))
        for name in ("table1_retrieval.csv", "fig6_scale.csv", "deploy.csv", "report.md"):
            (copy / name).unlink()
        result = subprocess.run(
            [*FA, "bench", "report", str(copy)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        for name in ("table1_retrieval.csv", "fig6_scale.csv", "fig7_traffic.csv", "deploy.csv"):
            assert rows(copy / name) == rows(out / name), name
        assert (copy / "report.md").read_text() == (out / "report.md").read_text()


class TestLocustFiles:
    def test_coldstart_locustfile(self, quick: tuple[Path, LabSpec], tmp_path: Path) -> None:
        """The locust file alone: locust's CSV carries deploy and first-invoke per image."""
        _, spec = quick
        samples = tmp_path / "samples.jsonl"
        result = locust(
            "coldstart.py",
            "--mode",
            "cached",
            "--only",
            "hello",
            "--lab-workdir",
            spec.workdir,
            "-u",
            "1",
            "--csv",
            str(tmp_path / "cs"),
            "--samples",
            str(samples),
            "--run-time",
            "3m",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        stats = {(r["Type"], r["Name"]): r for r in rows(tmp_path / "cs_stats.csv")}
        for kind in ("deploy", "first-invoke"):
            row = stats[(kind, "registry.lab/faas/hello:0.1.0")]
            assert row["Request Count"] == "1" and row["Failure Count"] == "0"
            assert float(row["Average Response Time"]) > 0
        lines = [json.loads(x) for x in samples.read_text().splitlines()]
        assert [x["kind"] for x in lines] == ["deploy", "first-invoke"]
        assert lines[0]["seconds"] <= lines[1]["seconds"]

    def test_invoke_locustfile(self, quick: tuple[Path, LabSpec], tmp_path: Path) -> None:
        _, spec = quick
        result = locust(
            "invoke.py",
            "--via",
            "hook",
            "--deploy",
            "--lab-workdir",
            spec.workdir,
            "-u",
            "1",
            "--run-time",
            "2s",
            "--csv",
            str(tmp_path / "inv"),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        (row,) = [r for r in rows(tmp_path / "inv_stats.csv") if r["Name"] == "hook hello"]
        assert int(row["Request Count"]) > 10 and row["Failure Count"] == "0"

    def test_bad_options_are_readable(self, tmp_path: Path) -> None:
        result = subprocess.run(
            [*FA, "bench", "paper", "--vms", "0,2", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2 and "positive VM counts" in result.stderr
