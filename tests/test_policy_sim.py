"""`faas-accel bench policy`: the trace loader, the replay on a synthetic trace whose Belady
and LRU results are worked out by hand, and the CLI's JSON shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from faas_accel.bench.policy_sim import ImageModel, build_images, cold_starts, simulate
from faas_accel.bench.trace import TraceError, load_trace
from faas_accel.cli import main

AZURE = Path("/work/shared/traces/azure-functions-2019-sample")
# one layer of exactly 1 MB per function, no shared bases, every active minute a cold start
ONE_MB: dict[str, Any] = {"own_mb": 1.0, "own_sigma": 0.0, "bases": 0, "keepalive": 0}


def write_trace(directory: Path, minutes: int, calls: dict[str, list[int]]) -> Path:
    """A trace CSV in the vHive sample's shape: `calls` maps a function to its active minutes."""
    directory.mkdir(exist_ok=True)
    header = ["HashFunction", "HashOwner", "HashApp", *(f"minute_{m + 1}" for m in range(minutes))]
    rows = [",".join(header)]
    for fn, active in calls.items():
        rows.append(",".join([fn, fn, fn, *("2" if m in active else "0" for m in range(minutes))]))
    path = directory / "tiny_inv.csv"
    path.write_text("\n".join(rows) + "\n")
    return directory


CYCLE = {"A": [0, 3], "B": [1, 4], "C": [2, 5]}  # A B C A B C, one per minute


class TestTrace:
    def test_loads_active_minutes(self, tmp_path: Path) -> None:
        trace = load_trace(write_trace(tmp_path / "t", 6, CYCLE))
        assert trace.functions == ("A", "B", "C")
        assert trace.active == ((0, 3), (1, 4), (2, 5))
        assert (trace.minutes, trace.invocations) == (6, 12)

    @pytest.mark.parametrize(
        ("content", "message"),
        [("HashFunction,minute_1\nf,x\n", "tiny_inv.csv:2: minute_1: not a count: 'x'"),
         ("HashFunction,minute_1\nf,-1\n", "tiny_inv.csv:2: minute_1: negative count -1"),
         ("HashFunction,Trigger\nf,http\n", "tiny_inv.csv:1: no minute columns")],
        ids=["not-a-number", "negative", "no-minutes"],
    )  # fmt: skip
    def test_bad_files_name_file_and_line(self, tmp_path: Path, content: str, message: str) -> None:
        (tmp_path / "tiny_inv.csv").write_text(content)
        with pytest.raises(TraceError, match=message):
            load_trace(tmp_path)

    def test_two_candidate_files_are_ambiguous(self, tmp_path: Path) -> None:
        for name in ("a_inv.csv", "b_inv.csv"):
            (tmp_path / name).write_text("HashFunction,minute_1\nf,1\n")
        with pytest.raises(TraceError, match="several traces"):
            load_trace(tmp_path)


class TestReplay:
    def test_keepalive_decides_cold_starts(self, tmp_path: Path) -> None:
        """Active minutes 0, 5, 20 with a 10-minute keep-alive: cold at 0 and 20 only."""
        trace = load_trace(write_trace(tmp_path / "t", 30, {"f": [0, 5, 20]}))
        assert [(e.minute, e.fn) for e in cold_starts(trace, 10)] == [(0, 0), (20, 0)]

    def test_image_model_is_seeded(self) -> None:
        model = ImageModel(seed=7)
        one, two = build_images(50, model), build_images(50, model)
        assert one == two
        assert len(one.sizes) == 50 + model.bases
        assert all(keys[-1] == f"fn{i}" for i, keys in enumerate(one.keys))

    def test_cyclic_trace_belady_and_lru_by_hand(self, tmp_path: Path) -> None:
        """A B C A B C with room for two 1 MB images, scoring minutes 3-5. LRU always evicts
        the one needed next: all three scored starts miss. Belady: at C (t=2) it drops B (next
        at 4, A's at 3); A hits, B misses and drops A (never again), C hits: 1 of 3."""
        trace = load_trace(write_trace(tmp_path / "t", 6, CYCLE))
        model = ImageModel(**ONE_MB, learn=3)
        described, results = simulate(trace, model, [0.7], ["lru", "belady"])
        lru, belady = results[0.7]["lru"], results[0.7]["belady"]
        assert (lru.cold_starts, lru.wan_served, lru.wan_bytes) == (3, 3, 3_000_000)
        assert (belady.cold_starts, belady.wan_served, belady.wan_bytes) == (3, 1, 1_000_000)
        assert described["total_bytes"] == 3_000_000
        assert described["scored_cold_starts"] == 3

    def test_learning_half_is_not_scored(self, tmp_path: Path) -> None:
        """Scoring every minute, the same Belady run misses A, B, C (cold) and B again: 4 of 6."""
        trace = load_trace(write_trace(tmp_path / "t", 6, CYCLE))
        _, results = simulate(trace, ImageModel(**ONE_MB, learn=0), [0.7], ["belady"])
        assert (results[0.7]["belady"].cold_starts, results[0.7]["belady"].wan_served) == (6, 4)

    def test_predictive_prefetches_a_periodic_image(self, tmp_path: Path) -> None:
        """f and g alternate every 10 min (each every 20) over one 1 MB slot: without prefetch
        every start misses; once 4 idle times made their windows known (minute 80), each is
        prefetched 4 min ahead of its use (window 18 min after the last use, minus 2 min lead),
        displacing the other, needed 14 min later. Scored from 120: 8 starts, all hits. The
        prefetch at 116 (for f at 120) is not scored; of the 8 scored ones, the last (f at 196,
        for minute 200) finds the trace over."""
        f_minutes = list(range(0, 200, 20))
        calls = {"f": f_minutes, "g": [m for m in range(200) if m % 20 == 10]}
        trace = load_trace(write_trace(tmp_path / "t", 200, calls))
        _, results = simulate(trace, ImageModel(**ONE_MB, learn=120), [0.5],
                              ["predictive", "predictive-evict"])  # fmt: skip
        pred, evict = results[0.5]["predictive"], results[0.5]["predictive-evict"]
        assert evict.wan_served == evict.cold_starts == 8
        assert pred.wan_served == 0
        assert (pred.prefetch_bytes, pred.prefetch_used_bytes) == (8_000_000, 7_000_000)


class TestCli:
    def test_json_shape(self, tmp_path: Path) -> None:
        trace = write_trace(tmp_path / "t", 6, CYCLE)
        png = tmp_path / "plot.png"
        args = ["bench", "policy", "--trace", str(trace), "--capacity", "0.4,0.7", "--json", "--learn", "3",
                "--own-mb", "1", "--own-sigma", "0", "--bases", "0", "--keepalive", "0", "--plot", str(png)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert set(doc) == {"model", "capacities"}
        assert set(doc["capacities"]) == {"0.4", "0.7"}
        names = {"lru", "lfu", "gdsf", "s3fifo", "predictive", "predictive-evict", "belady"}
        for per_policy in doc["capacities"].values():
            assert set(per_policy) == names
            for row in per_policy.values():
                assert set(row) == {"wan_served_share", "wan_bytes", "prefetch_bytes", "ratio_to_belady"}
        assert doc["capacities"]["0.7"]["lru"] == {"wan_served_share": 1.0, "wan_bytes": 3_000_000,
                                                   "prefetch_bytes": 0, "ratio_to_belady": 3.0}  # fmt: skip
        assert doc["model"]["keepalive"] == 0 and doc["model"]["own_mb"] == 1.0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    @pytest.mark.parametrize(
        ("extra", "message"),
        [(["--capacity", "1.5"], "capacities are fractions"),
         (["--policies", "lru,mru"], "unknown policy 'mru'"),
         (["--param", "predictive.bins=0", "--learn", "3"], "bins: need 1 to 10080 bins"),
         (["--learn", "6"], "learn: 6 minutes leave no minute to score")],
        ids=["capacity", "policy", "param", "learn"],
    )  # fmt: skip
    def test_bad_options(self, tmp_path: Path, extra: list[str], message: str) -> None:
        trace = write_trace(tmp_path / "t", 6, CYCLE)
        result = CliRunner().invoke(main, ["bench", "policy", "--trace", str(trace), *extra])
        assert result.exit_code != 0
        assert message in result.output

    @pytest.mark.skipif(not AZURE.is_dir(), reason="the shared Azure trace is not on this machine")
    def test_full_azure_trace_lru_against_belady(self) -> None:
        """The real day (a few seconds for two policies): 6094 of 11850 cold starts scored,
        and LRU needs the WAN for more of them than Belady."""
        args = ["bench", "policy", "--trace", str(AZURE), "--policies", "lru,belady", "--json"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert (doc["model"]["cold_starts"], doc["model"]["scored_cold_starts"]) == (11850, 6094)
        for cap in ("0.1", "0.3"):
            row = doc["capacities"][cap]
            assert row["lru"]["wan_served_share"] > row["belady"]["wan_served_share"] > 0
