"""The paper report's pure parts: tables, targets, Markdown, settings and CSVs (no lab needed).

Every expected number is worked out by hand from the small row lists below.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from faas_accel.bench import report, tables
from faas_accel.bench.results import read_csv, summary, write_csv
from faas_accel.bench.settings import PaperSettings

ALPINE = "registry.lab/ref/alpine:paper"
CUSTOM = "registry.lab/ref/custom:paper"
HELLO = "registry.lab/faas/hello:0.1.0"
ECHO = "registry.lab/faas/echo:0.1.0"


def pull(image: str, mode: str, seconds: float | None, error: str = "") -> dict[str, Any]:
    return {"image": image, "mode": mode, "rep": 0, "seconds": seconds, "wan_bytes": 0, "error": error}


def sample(
    phase: str, mode: str, kind: str, seconds: float, *, image: str = HELLO, users: int = 1, error: str = ""
) -> dict[str, Any]:
    return {
        "phase": phase,
        "mode": mode,
        "users": users,
        "vm": "vm1",
        "kind": kind,
        "image": image,
        "seconds": seconds,
        "error": error,
    }


def run(mode: str, users: int, wan_bytes: int, wall_s: float = 10.0) -> dict[str, Any]:
    return {
        "phase": "scale",
        "mode": mode,
        "users": users,
        "wan_bytes": wan_bytes,
        "wall_s": wall_s,
        "exit": 0,
    }


# alpine: direct mean 3.0, cached mean 0.3, floor mean 0.2, tarball 6.0; two failed rows.
PULLS = [
    pull(ALPINE, "direct", 2.0),
    pull(ALPINE, "cached", 0.2),
    pull(ALPINE, "floor", 0.2),
    pull(ALPINE, "tarball", 6.0),
    pull(ALPINE, "direct", 4.0),
    pull(ALPINE, "cached", 0.4),
    pull(ALPINE, "floor", 0.2),
    pull(ALPINE, "cached", None, error="ctr: i/o timeout"),
    pull(ALPINE, "direct", 100.0, error="500 from upstream"),
    pull(CUSTOM, "direct", 1.0),
]
SIZES = {ALPINE: 3_500_000}

# scale: N=2 direct first invokes 4.0, 6.0; N=2 cached 1.0, 2.0 (+1 failure); N=1 direct 9.0.
SCALE_SAMPLES = [
    sample("scale", "direct", "deploy", 1.0, users=2),
    sample("scale", "direct", "first-invoke", 4.0, users=2),
    sample("scale", "direct", "first-invoke", 6.0, users=2),
    sample("scale", "cached", "first-invoke", 1.0, users=2),
    sample("scale", "cached", "first-invoke", 2.0, users=2),
    sample("scale", "cached", "first-invoke", 50.0, users=2, error="boom"),
    sample("deploy", "direct", "first-invoke", 100.0, users=2),
    sample("scale", "direct", "first-invoke", 9.0, users=1),
]
RUNS = [run("direct", 2, 400_000_000), run("cached", 2, 210_000_000, 5.0), run("direct", 1, 200_000_000)]

# deploy: hello direct 4.0 / 5.0, cached-hit 0.2 / 0.25 (95% below), prewarmed - / 0.5 (90% below).
DEPLOY_SAMPLES = [
    sample("deploy", "direct", "deploy", 3.0),
    sample("deploy", "direct", "first-invoke", 4.0),
    sample("deploy", "direct", "deploy", 5.0),
    sample("deploy", "direct", "first-invoke", 6.0),
    sample("deploy", "direct", "first-invoke", 0.001, error="no such function"),
    sample("deploy", "cached-hit", "deploy", 0.2),
    sample("deploy", "cached-hit", "first-invoke", 0.25),
    sample("deploy", "prewarmed", "first-invoke", 0.5),
    sample("scale", "direct", "first-invoke", 99.0),
    sample("deploy", "cached-hit", "first-invoke", 1.0, image=ECHO),
]


def by_image(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["image"]: r for r in rows}


def find(targets: list[tables.Target], start: str) -> tables.Target:
    (hit,) = [t for t in targets if t.what.startswith(start)]
    return hit


class TestHelpers:
    @pytest.mark.parametrize(
        ("new", "base", "expected"),
        [
            (1.0, 4.0, 0.75),
            (0.0, 4.0, 1.0),
            (6.0, 3.0, -1.0),
            (None, 4.0, None),
            (1.0, 0, None),
            (1.0, None, None),
        ],
        ids=["quarter", "zero-new", "slower", "no-new", "zero-base", "no-base"],
    )
    def test_reduction(self, new: float | None, base: float | None, expected: float | None) -> None:
        """reduction is 1 - new/base, and None when either side is missing or the base is 0."""
        assert tables.reduction(new, base) == (None if expected is None else pytest.approx(expected))

    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [(3.0, 2.0, 1.5), (0.0, 2.0, 0.0), (None, 2.0, None), (3.0, 0, None), (3.0, None, None)],
        ids=["ratio", "zero-a", "no-a", "zero-b", "no-b"],
    )
    def test_ratio(self, a: float | None, b: float | None, expected: float | None) -> None:
        """ratio is a/b, and None when a is missing or b is 0 or missing."""
        assert tables.ratio(a, b) == (None if expected is None else pytest.approx(expected))

    def test_ecdf_sorts_and_counts_ties(self) -> None:
        """Each sorted value gets the fraction of samples up to and including its position."""
        assert tables.ecdf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.5, 0.75, 1.0])

    def test_ecdf_of_one_and_of_none(self) -> None:
        """One sample reaches 1.0 at once; no samples give two empty lists."""
        assert tables.ecdf([5.0]) == ([5.0], [1.0])
        assert tables.ecdf([]) == ([], [])

    @pytest.mark.parametrize(
        ("image", "name"),
        [
            (ALPINE, "alpine"),
            (HELLO, "hello"),
            ("198.18.0.2:5000/registry.lab/ref/nginx:paper", "nginx"),
            ("python", "python"),
        ],
        ids=["ref", "function", "host-port", "bare"],
    )
    def test_short_name(self, image: str, name: str) -> None:
        """The short name is the last path part without its tag."""
        assert tables.short(image) == name

    @pytest.mark.parametrize(
        ("args", "text"),
        [
            ((None, ".2f", " s"), "-"),
            ((1.5, ".2f", " s"), "1.50 s"),
            ((0.123, ".1%", " s"), "12.3%"),
            (("n/a", ".2f", " s"), "n/a"),
        ],
        ids=["none", "seconds", "percent-no-suffix", "text"],
    )
    def test_fmt(self, args: tuple[Any, str, str], text: str) -> None:
        """Missing values are '-', percentages drop the suffix, strings pass through."""
        assert report.fmt(*args) == text


class TestRetrievalTable:
    def test_means_reductions_and_floor_ratio(self) -> None:
        """alpine: T_fetch 3.0, T_load 0.3 (90% less), 1.5x the 0.2 s floor, tarball twice T_fetch."""
        row = by_image(tables.retrieval_table(PULLS, SIZES))["alpine"]
        assert row["t_fetch_s"] == pytest.approx(3.0)
        assert row["t_load_s"] == pytest.approx(0.3)
        assert row["reduction"] == pytest.approx(0.9)
        assert row["floor_s"] == pytest.approx(0.2)
        assert row["cached_over_floor"] == pytest.approx(1.5)
        assert row["tarball_s"] == pytest.approx(6.0)
        assert row["tarball_reduction"] == pytest.approx(-1.0)
        assert row["size_mb"] == pytest.approx(3.5)

    def test_failed_rows_are_counted_not_averaged(self) -> None:
        """The two failed pulls (one with a 100 s time) are failures and stay out of the means."""
        row = by_image(tables.retrieval_table(PULLS, SIZES))["alpine"]
        assert row["failures"] == 2
        assert row["pulls"] == 2
        assert row["t_fetch_s"] == pytest.approx(3.0)

    def test_paper_numbers_by_short_name(self) -> None:
        """registry.lab/ref/alpine:paper finds the paper's alpine row; an unknown image finds none."""
        rows = by_image(tables.retrieval_table(PULLS, SIZES))
        assert rows["alpine"]["paper_reduction"] == 0.93
        assert rows["alpine"]["paper_size_mb"] == 7.33
        assert rows["custom"]["paper_reduction"] is None
        assert rows["custom"]["paper_size_mb"] is None

    def test_missing_modes_give_none(self) -> None:
        """An image pulled only directly has no T_load, floor, tarball or ratios, and 0 full pulls."""
        row = by_image(tables.retrieval_table(PULLS, SIZES))["custom"]
        assert row["t_fetch_s"] == pytest.approx(1.0)
        for key in (
            "t_load_s",
            "reduction",
            "floor_s",
            "cached_over_floor",
            "tarball_s",
            "tarball_reduction",
        ):
            assert row[key] is None, key
        assert row["pulls"] == 0
        assert row["failures"] == 0
        assert row["size_mb"] == 0.0

    def test_images_keep_first_seen_order(self) -> None:
        """One row per image, in the order the pulls first name them."""
        assert [r["image"] for r in tables.retrieval_table(PULLS, SIZES)] == ["alpine", "custom"]
        assert tables.retrieval_table([], {}) == []


class TestScaleAndTraffic:
    def test_scale_means_first_invokes_of_the_scale_phase_only(self) -> None:
        """Per (N, mode): deploy samples, deploy-phase samples and failures stay out of the mean."""
        rows = {(r["vms"], r["mode"]): r for r in tables.scale_table(SCALE_SAMPLES, RUNS)}
        assert list(rows) == [(2, "direct"), (2, "cached"), (1, "direct")]
        assert rows[2, "direct"]["cold_start_s"] == pytest.approx(5.0)
        assert rows[2, "direct"]["cold_start_max_s"] == pytest.approx(6.0)
        assert rows[2, "direct"]["samples"] == 2
        assert rows[2, "cached"]["cold_start_s"] == pytest.approx(1.5)
        assert rows[2, "cached"]["samples"] == 2
        assert rows[2, "cached"]["failures"] == 1
        assert rows[1, "direct"]["cold_start_s"] == pytest.approx(9.0)
        assert rows[2, "cached"]["upstream_bytes"] == 210_000_000
        assert rows[2, "cached"]["wall_s"] == 5.0

    def test_scale_run_without_samples(self) -> None:
        """A run with no samples of its own has no cold start rather than someone else's."""
        (row,) = tables.scale_table(SCALE_SAMPLES, [run("peer", 2, 1)])
        assert row["cold_start_s"] is None
        assert row["cold_start_max_s"] is None
        assert row["samples"] == 0

    def test_traffic_saved_formula_and_one_copy(self) -> None:
        """N=2: cached 210 MB vs direct 400 MB saves 47.5%; 1 - 1/2 = 50%; 1.05 copies of 200 MB."""
        scale = tables.scale_table(SCALE_SAMPLES, RUNS)
        rows = {r["vms"]: r for r in tables.traffic_table(scale, 200_000_000, 300_000_000, images=2)}
        assert list(rows) == [1, 2]
        two = rows[2]
        assert two["direct_bytes"] == 400_000_000
        assert two["cached_bytes"] == 210_000_000
        assert two["saved"] == pytest.approx(0.475)
        assert two["paper_formula"] == pytest.approx(0.5)
        assert two["cached_over_one_copy"] == pytest.approx(1.05)
        assert (two["one_copy_bytes"], two["images_bytes"], two["images"]) == (200_000_000, 300_000_000, 2)

    def test_traffic_without_cached_run(self) -> None:
        """N=1 with only a direct run: nothing saved or compared, and 1 - 1/1 = 0."""
        scale = tables.scale_table(SCALE_SAMPLES, RUNS)
        one = {r["vms"]: r for r in tables.traffic_table(scale, 200_000_000, 300_000_000)}[1]
        assert one["saved"] is None
        assert one["cached_over_one_copy"] is None
        assert one["paper_formula"] == 0.0
        assert "cached_bytes" not in one

    def test_paper_formula_for_eight(self) -> None:
        """1 - 1/N for N=8 is 87.5%."""
        scale = [{"vms": 8, "mode": "direct", "upstream_bytes": 8}]
        (row,) = tables.traffic_table(scale, 1, 1)
        assert row["paper_formula"] == pytest.approx(0.875)


class TestDeployTable:
    def test_means_per_function_and_mode(self) -> None:
        """hello: direct deploy 4.0 / first invoke 5.0; the failed and scale-phase samples are ignored."""
        rows = {r["function"]: r for r in tables.deploy_table(DEPLOY_SAMPLES)}
        hello = rows["hello"]
        assert hello["direct_deploy_s"] == pytest.approx(4.0)
        assert hello["direct_first-invoke_s"] == pytest.approx(5.0)
        assert hello["cached-hit_deploy_s"] == pytest.approx(0.2)
        assert hello["cached-hit_first-invoke_s"] == pytest.approx(0.25)
        assert hello["prewarmed_deploy_s"] is None
        assert hello["prewarmed_first-invoke_s"] == pytest.approx(0.5)

    def test_reductions_against_direct(self) -> None:
        """cached-hit 0.25 s and prewarmed 0.5 s against 5.0 s direct are 95% and 90% less."""
        hello = {r["function"]: r for r in tables.deploy_table(DEPLOY_SAMPLES)}["hello"]
        assert hello["cached-hit_reduction"] == pytest.approx(0.95)
        assert hello["prewarmed_reduction"] == pytest.approx(0.90)
        assert "direct_reduction" not in hello

    def test_function_without_direct_has_no_reduction(self) -> None:
        """echo, deployed only cached-hit, has its time but no reduction."""
        echo = {r["function"]: r for r in tables.deploy_table(DEPLOY_SAMPLES)}["echo"]
        assert echo["cached-hit_first-invoke_s"] == pytest.approx(1.0)
        assert echo["direct_first-invoke_s"] is None
        assert echo["cached-hit_reduction"] is None

    def test_no_deploy_phase_no_rows(self) -> None:
        """Scale samples alone make no deploy table."""
        assert tables.deploy_table(SCALE_SAMPLES[:6]) == []

    def test_provider_phases_are_averaged_and_shown_with_the_largest_in_bold(self) -> None:
        """Deploy samples carrying the provider's phases get per-mode phase means and a table."""
        timed = []
        for unpack in (3.0, 5.0):
            s = sample("deploy", "direct", "deploy", unpack + 1.0)
            s["phases"] = {"resolve": 0.1, "fetch": 0.5, "unpack": unpack, "start": 0.2, "healthy": 0.2}
            timed.append(s)
        (row,) = tables.deploy_table(timed)
        assert (row["direct_unpack_s"], row["direct_fetch_s"]) == (pytest.approx(4.0), pytest.approx(0.5))
        md = "\n".join(report._phases_md([row], ["direct"]))
        assert "| hello | direct | 0.10 | 0.50 | **4.00** | 0.20 | 0.20 |" in md
        assert report._phases_md(tables.deploy_table(DEPLOY_SAMPLES), ["direct"]) == []


class TestTargets:
    def test_deploy_reductions(self) -> None:
        """cached-hit 95% meets its 92% goal, prewarmed 90% misses its 95% goal."""
        deploy = [{"function": "hello", "cached-hit_reduction": 0.95, "prewarmed_reduction": 0.90}]
        got = tables.targets([], deploy, [], [])
        hit = find(got, "hello: cached-hit first-invoke at least 92% below direct")
        pre = find(got, "hello: prewarmed first-invoke at least 95% below direct")
        assert (hit.met, hit.measured) == (True, "95.0% below")
        assert (pre.met, pre.measured) == (False, "90.0% below")

    def test_deploy_not_measured(self) -> None:
        """A function with no reductions gets both targets as not measured."""
        got = tables.targets([], [{"function": "echo"}], [], [])
        assert [(t.met, t.measured) for t in got] == [(None, "not measured")] * 2

    def test_prepulled_only_when_measured_and_failures_are_misses(self) -> None:
        """prepulled gets a target once the run measured it; a mode whose deploys all failed
        is a miss (not 'not measured')."""
        deploy = [
            {
                "function": "hello",
                "prepulled_failures": 0,
                "prepulled_reduction": 0.96,
                "cached-hit_failures": 3,
                "cached-hit_reduction": None,
            }
        ]
        got = tables.targets([], deploy, [], [])
        assert find(got, "hello: prepulled first-invoke at least 95% below direct").met is True
        failed = find(got, "hello: cached-hit first-invoke at least 92% below direct")
        assert (failed.met, failed.measured) == (False, "3 failed deploy(s), nothing to compare")
        assert not any("prepulled" in t.what for t in tables.targets([], [{"function": "x"}], [], []))

    def test_one_copy_within_two_percent(self) -> None:
        """1.01 copies is one copy, 1.03 is not, none measured is None."""
        traffic = [
            {"vms": n, "cached_over_one_copy": r, "one_copy_bytes": 150_000_000, "images_bytes": 250_000_000}
            for n, r in ((1, 1.01), (2, 1.03), (4, None))
        ]
        got = tables.targets([], [], [], traffic)
        assert find(got, "N=1: cached upstream bytes").met is True
        assert find(got, "N=1: cached upstream bytes").measured == "1.010 copies"
        assert find(got, "N=2: cached upstream bytes").met is False
        assert find(got, "N=4: cached upstream bytes").met is None

    @pytest.mark.parametrize(
        ("images", "one", "per_image", "met"),
        [(2, 150_000_000, 250_000_000, True), (2, 250_000_000, 250_000_000, False), (1, 100, 100, None)],
        ids=["shared", "nothing-shared", "single-image"],
    )
    def test_shared_base_layers(self, images: int, one: int, per_image: int, met: bool | None) -> None:
        """One copy of the unique layers must be below the per-image sum; one image can't share."""
        traffic = [{"vms": 1, "cached_over_one_copy": None, "images": images}]
        traffic[0].update(one_copy_bytes=one, images_bytes=per_image)
        assert find(tables.targets([], [], [], traffic), "shared base layers").met is met

    def test_shared_base_measured_in_mb(self) -> None:
        """The shared-base target shows both sizes in MB."""
        traffic = [{"vms": 1, "images": 2, "one_copy_bytes": 150_000_000, "images_bytes": 250_000_000}]
        assert find(tables.targets([], [], [], traffic), "shared base").measured == "150.0 MB vs 250.0 MB"

    def test_no_traffic_no_shared_base_target(self) -> None:
        """Without a scale run there is no shared-base target at all."""
        assert tables.targets([], [], [], []) == []

    def test_floor_ratio(self) -> None:
        """1.1x the floor is within 1.2x, 1.3x is not, no floor is not measured."""
        retrieval: list[dict[str, Any]] = [
            {"image": "alpine", "cached_over_floor": 1.1},
            {"image": "ubuntu", "cached_over_floor": 1.3},
            {"image": "nginx", "cached_over_floor": None},
        ]
        got = tables.targets(retrieval, [], [], [])
        assert (find(got, "alpine:").met, find(got, "alpine:").measured) == (True, "1.10x")
        assert find(got, "ubuntu:").met is False
        assert (find(got, "nginx:").met, find(got, "nginx:").measured) == (None, "not measured")

    def test_peer_beaten_only_in_time_and_bytes(self) -> None:
        """N=2 wins both; N=4 is faster with more bytes; N=8 fewer bytes but slower: both lose."""
        scale = [
            {"vms": 2, "mode": "cached", "cold_start_s": 1.0, "upstream_bytes": 100_000_000},
            {"vms": 2, "mode": "peer", "cold_start_s": 2.0, "upstream_bytes": 200_000_000},
            {"vms": 4, "mode": "cached", "cold_start_s": 1.0, "upstream_bytes": 300_000_000},
            {"vms": 4, "mode": "peer", "cold_start_s": 2.0, "upstream_bytes": 200_000_000},
            {"vms": 8, "mode": "cached", "cold_start_s": 3.0, "upstream_bytes": 100_000_000},
            {"vms": 8, "mode": "peer", "cold_start_s": 2.0, "upstream_bytes": 200_000_000},
        ]
        got = tables.targets([], [], scale, [])
        two = find(got, "N=2: the peer")
        assert two.met is True
        assert two.measured == "1.00 s vs 2.00 s, 100.0 MB vs 200.0 MB"
        assert find(got, "N=4: the peer").met is False
        assert find(got, "N=8: the peer").met is False

    def test_peer_skipped_for_one_vm_or_missing_side(self) -> None:
        """N=1, a missing peer run and a run with no cold start give no peer target."""
        scale = [
            {"vms": 1, "mode": "cached", "cold_start_s": 1.0, "upstream_bytes": 1},
            {"vms": 1, "mode": "peer", "cold_start_s": 2.0, "upstream_bytes": 2},
            {"vms": 2, "mode": "cached", "cold_start_s": 1.0, "upstream_bytes": 1},
            {"vms": 4, "mode": "cached", "cold_start_s": None, "upstream_bytes": 1},
            {"vms": 4, "mode": "peer", "cold_start_s": 2.0, "upstream_bytes": 2},
        ]
        assert tables.targets([], [], scale, []) == []


def settings_doc(settings: PaperSettings) -> dict[str, Any]:
    """The settings part of the results document, as `Paper.write` builds it."""
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()}
    return {**plain, "vms": 1, "runtime": "containerd", "vm_disk": "tmpfs", "nic_workers": 2}


def make_doc(tmp_path: Path, **parts: Any) -> dict[str, Any]:
    settings = PaperSettings.for_quick(tmp_path, wan_rate="100mbit", wan_rtt="50ms", wan_setup="30ms")
    retrieval = tables.retrieval_table(PULLS, SIZES)
    deploy = tables.deploy_table(DEPLOY_SAMPLES)
    doc: dict[str, Any] = {
        "started": "2024-05-01 12:00 UTC",
        "machine": "testhost (4 CPUs, Linux 6.1)",
        "settings": settings_doc(settings),
        "retrieval": retrieval,
        "scale": [],
        "traffic": [],
        "deploy": deploy,
        "invoke": [],
        "memory": {},
        "sizes": SIZES,
        "targets": [asdict(t) for t in tables.targets(retrieval, deploy, [], [])],
        "files": {"csv": ["deploy.csv", "table1_retrieval.csv"], "png": ["fig4_ecdf.png"]},
    }
    doc.update(parts)
    return doc


class TestMarkdown:
    def test_setup_names_the_wan(self, tmp_path: Path) -> None:
        """The setup section shows the WAN rate, per-RTT and per-connection delays of the run."""
        md = report.markdown(make_doc(tmp_path))
        assert "**100mbit** (tc tbf), **+50ms** per round trip and **+30ms** per new connection" in md
        assert "Run 2024-05-01 12:00 UTC on testhost (4 CPUs, Linux 6.1); quick smoke run." in md
        assert "- Retrieval: 2 pulls per image per mode" in md

    def test_retrieval_table(self, tmp_path: Path) -> None:
        """alpine's row: 0.9 / 0.93 is 0.97x the paper, 0.3 / 0.2 is 1.50x the floor."""
        md = report.markdown(make_doc(tmp_path)).splitlines()
        header = (
            "| image | MB (paper) | T_fetch | T_load | faster by | paper | ratio | floor | T_load/floor "
            "| tarball + ctr import | faster by | tarball + docker load | faster by |"
        )
        assert header in md
        alpine = "| alpine | 3.5 (7.3) | 3.00 s | 0.30 s | 90.0% | 93% | 0.97x | 0.20 s | 1.50x | 6.00 s "
        assert alpine + "| -100.0% | - | - |" in md
        assert "| custom | 0.0 (-) | 1.00 s | - | - | - | - | - | - | - | - | - | - |" in md

    def test_deploy_table(self, tmp_path: Path) -> None:
        """Only the measured modes get columns; prewarmed has no deploy time."""
        md = report.markdown(make_doc(tmp_path)).splitlines()
        header = (
            "| function | direct deploy / first invoke | cached-hit deploy / first invoke "
            "| prewarmed deploy / first invoke | cached-hit vs direct | prewarmed vs direct |"
        )
        assert header in md
        assert "| hello | 4.00 / 5.00 s | 0.20 / 0.25 s | - / 0.50 s | 95.0% | 90.0% |" in md

    def test_targets_mark_a_miss(self, tmp_path: Path) -> None:
        """A missed target reads **no**, a met one yes, an unmeasured one -."""
        md = report.markdown(make_doc(tmp_path)).splitlines()
        assert "| target | measured | met |" in md
        assert "| hello: cached-hit first-invoke at least 92% below direct | 95.0% below | yes |" in md
        assert "| hello: prewarmed first-invoke at least 95% below direct | 90.0% below | **no** |" in md
        assert "| echo: prewarmed first-invoke at least 95% below direct | not measured | - |" in md
        assert "| alpine: cached pull within 1.2x of a plain registry on the NIC | 1.50x | **no** |" in md

    def test_empty_sections_are_left_out(self, tmp_path: Path) -> None:
        """No scale, memory or invoke rows: no Figure 6/7, memory or warm-path section."""
        md = report.markdown(make_doc(tmp_path))
        for heading in ("## Figure 6", "## Figure 7", "## Cache memory", "## Warm path"):
            assert heading not in md
        assert "## Table 1" in md
        bare = report.markdown(make_doc(tmp_path, retrieval=[], deploy=[], targets=[]))
        assert "## Table 1" not in bare
        assert "## Serverless deploy" not in bare
        assert "## Targets" in bare

    def test_scale_traffic_memory_and_invoke(self, tmp_path: Path) -> None:
        """With scale, memory and invoke rows their sections appear with the hand-worked numbers."""
        scale = tables.scale_table(SCALE_SAMPLES, RUNS)
        traffic = tables.traffic_table(scale, 200_000_000, 300_000_000)
        memory = {"peak_total_rss_mb": 42.3, "peak_process_hwm_mb": 20.0, "processes": 3}
        invoke = [
            {"via": "hook", "function": "hello", "requests": 10, "failures": 0}
            | {"median_ms": 4.0, "p95_ms": 9.0, "rps": 12.5}
        ]
        md = report.markdown(make_doc(tmp_path, scale=scale, traffic=traffic, memory=memory, invoke=invoke))
        lines = md.splitlines()
        assert "| VMs | direct | cached | cached vs direct | cached vs peer |" in lines
        assert "| 1 | 9.00 s | - | - | - |" in lines
        assert "| 2 | 5.00 s | 1.50 s | 70.0% | - |" in lines
        assert "| 2 | 400.0 | 210.0 | 47.5% | 50.0% | 1.050 |" in lines
        assert "One copy of the unique layers of the functions: 200.0 MB" in md
        assert "| NIC cache | 42.3 MB | 20.0 MB | 3 | 4.98 MB |" in lines
        assert "| hook | hello | 10 | 0 | 4 ms | 9 ms | 12.5 |" in lines

    def test_files_and_full_run(self, tmp_path: Path) -> None:
        """The files section lists CSVs and embeds plots; a non-quick run says full run."""
        doc = make_doc(tmp_path)
        doc["settings"]["quick"] = False
        md = report.markdown(doc)
        assert "CSV: `deploy.csv`, `table1_retrieval.csv`" in md
        assert "Plots: ![fig4_ecdf.png](fig4_ecdf.png)" in md
        assert "; full run." in md


class TestPaperSettings:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"vm_counts": ()}, "--vms takes distinct positive VM counts"),
            ({"vm_counts": (1, 0)}, "--vms takes distinct positive VM counts"),
            ({"pulls": 0}, "--pulls"),
            ({"repeats": 0}, "--repeats"),
            ({"invoke_seconds": 0}, "--invoke-seconds"),
            ({"ref_images": ("alpine", "busybox")}, r"unknown reference image\(s\): busybox"),
            ({"sections": ("retrieval", "plots")}, r"unknown section\(s\): plots"),
            ({"vm_counts": (2, 2)}, "--vms takes distinct positive VM counts"),
            ({"pulls": 3, "tarball_pulls": 5}, r"--tarball-pulls \(5\) cannot exceed --pulls \(3\)"),
        ],
        ids=[
            "no-vms",
            "zero-vms",
            "no-pulls",
            "no-repeats",
            "no-invoke",
            "ref-image",
            "section",
            "dup-vms",
            "tarballs",
        ],
    )
    def test_bad_settings_are_refused(self, tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
        """Each bad setting raises ValueError naming the option or the unknown value."""
        with pytest.raises(ValueError, match=message):
            PaperSettings(out=tmp_path, **kwargs).validate()

    def test_defaults_and_no_tarball_are_valid(self, tmp_path: Path) -> None:
        """validate returns the settings themselves; zero tarball pulls is allowed."""
        settings = PaperSettings(out=tmp_path, tarball_pulls=0)
        assert settings.validate() is settings

    def test_for_quick(self, tmp_path: Path) -> None:
        """A quick run is one VM, two pulls, alpine and hello only."""
        quick = PaperSettings.for_quick(tmp_path).validate()
        assert quick.quick is True
        assert quick.vm_counts == (1,)
        assert quick.pulls == 2
        assert quick.ref_images == ("alpine",)
        assert quick.functions == ("hello",)
        assert quick.out == tmp_path

    def test_for_quick_keeps_overrides(self, tmp_path: Path) -> None:
        """Explicit options win over the quick defaults; the rest stay quick."""
        quick = PaperSettings.for_quick(tmp_path, pulls=5, ref_images=("nginx",), wan_rate="10mbit")
        assert (quick.pulls, quick.ref_images, quick.wan_rate) == (5, ("nginx",), "10mbit")
        assert quick.vm_counts == (1,)
        assert quick.repeats == 1


class TestWriteCsv:
    def test_header_is_the_union_of_keys(self, tmp_path: Path) -> None:
        """Keys in first-seen order; a row without a key leaves its cell empty."""
        path = tmp_path / "rows.csv"
        write_csv(path, [{"a": 1, "b": 2}, {"b": 3, "c": 4}])
        with open(path, newline="") as fh:
            assert list(csv.reader(fh)) == [["a", "b", "c"], ["1", "2", ""], ["", "3", "4"]]

    def test_no_rows_is_a_header_only_file(self, tmp_path: Path) -> None:
        """An empty table still makes a file, holding only a header line."""
        path = tmp_path / "empty.csv"
        write_csv(path, [])
        with open(path, newline="") as fh:
            assert list(csv.reader(fh)) == [["empty"]]

    def test_nested_cells_come_back_from_read_csv(self, tmp_path: Path) -> None:
        """A dict cell (a deploy's phases) is written as JSON and read back as the same dict."""
        path = tmp_path / "samples.csv"
        phases = {"fetch": 0.5, "unpack": 1.25}
        write_csv(path, [{"seconds": 1.5, "phases": phases}, {"seconds": 2.0}])
        rows = read_csv(path, floats=("seconds",), jsons=("phases",))
        assert rows == [{"seconds": 1.5, "phases": phases}, {"seconds": 2.0, "phases": None}]


class TestSummary:
    def test_counts_only_measured_targets(self, tmp_path: Path) -> None:
        """Two met, one missed and one unmeasured target read 'targets met: 2/3'."""
        doc = make_doc(tmp_path)
        doc["targets"] = [
            {"what": "a", "measured": "", "met": True},
            {"what": "b", "measured": "", "met": False},
            {"what": "c", "measured": "", "met": None},
            {"what": "d", "measured": "", "met": True},
        ]
        assert summary(doc).splitlines()[-1] == "targets met: 2/3"

    def test_lines_per_table(self, tmp_path: Path) -> None:
        """Retrieval, deploy, traffic and memory each get their line with the worked numbers."""
        scale = tables.scale_table(SCALE_SAMPLES, RUNS)
        traffic = tables.traffic_table(scale, 200_000_000, 300_000_000)
        doc = make_doc(tmp_path, traffic=traffic, memory={"peak_total_rss_mb": 42.3})
        lines = summary(doc).splitlines()
        assert (
            "  alpine: T_fetch 3.00 s, T_load 0.30 s (90.0% faster; paper 93%), floor 0.20 s, tarball 6.00 s"
        ) in lines
        assert (
            "   hello: first invoke direct 5.00 s, cached-hit 0.25 s, prewarmed 0.50 s, prepulled - s"
            in lines
        )
        assert "N=2: upstream saved 47.5% (1-1/N = 50.0%)" in lines
        assert "cache peak RSS 42.3 MB" in lines
        # the doc's own targets: cached-hit met; prewarmed and the 1.5x floor missed; echo, custom unmeasured
        assert lines[-1] == "targets met: 1/3"


class TestTimeSavedModel:
    def test_paper_model(self) -> None:
        """T_fetch 4, T_load 1: N=1 saves nothing, N=4 saves 1 - (4 + 3) / 16."""
        assert tables.time_saved(4.0, 1.0, 1) == 0.0
        assert tables.time_saved(4.0, 1.0, 4) == pytest.approx(1 - 7 / 16)
        assert tables.time_saved(None, 1.0, 4) is None and tables.time_saved(0.0, 1.0, 4) is None


class TestLastHopTargets:
    def test_cached_against_direct_at_the_largest_n(self) -> None:
        """hello and heavy at the largest N: 60 % below direct at 1 Gbit, 90 % at 100 Mbit."""
        rows = [
            sample("scale", mode, "first-invoke", secs, image=f"registry.lab/faas/{fn}:0.1.0", users=users)
            for fn, mode, secs, users in (
                ("hello", "direct", 2.0, 4),
                ("hello", "cached", 0.5, 4),
                ("heavy", "direct", 5.0, 4),
                ("heavy", "cached", 2.5, 4),
                ("heavy", "cached", 0.1, 1),  # a smaller N is not the target's
            )
        ]
        fast = {t.what.split(",")[0]: t for t in tables.last_hop_targets(rows, "1gbit")}
        assert (fast["hello"].met, fast["heavy"].met) == (True, False)
        assert fast["heavy"].measured == "50.0% below (2.50 s vs 5.00 s)"
        slow = tables.last_hop_targets(rows, "100mbit")
        assert [t.met for t in slow] == [False, False] and "90%" in slow[0].what
        assert tables.last_hop_targets([], "1gbit") == []
