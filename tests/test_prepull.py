"""Prepull's pure choice: what a VM holds from what the NIC holds and how popular it is."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from faas_accel.cli import main
from faas_accel.prepull import Candidate, candidates, choose

MB = 1_000_000
ONCE = ["prepull", "once", "--cache", "http://127.0.0.1:9", "--mirror-host", "h:1", "--address", "/nope"]


def c(image: str, size: int = MB, *, complete: bool = True, score: float = 0.0) -> Candidate:
    return Candidate(image, size, complete, score)


class TestChoose:
    def test_most_popular_first_up_to_the_limit(self) -> None:
        pool = [c("r/a:1", score=1), c("r/b:1", score=5), c("r/c:1", score=3)]
        assert choose(pool, limit=2) == ["r/b:1", "r/c:1"]

    def test_incomplete_images_are_never_chosen(self) -> None:
        """A VM pulls only what the NIC holds whole: anything else would cross the WAN."""
        pool = [c("r/a:1", complete=False, score=9), c("r/b:1", score=1)]
        assert choose(pool, limit=5) == ["r/b:1"]

    def test_budget_skips_what_does_not_fit_and_keeps_going(self) -> None:
        pool = [
            c("r/big:1", 900 * MB, score=9),
            c("r/a:1", 300 * MB, score=5),
            c("r/b:1", 600 * MB, score=4),
            c("r/c:1", 100 * MB, score=1),
        ]
        assert choose(pool, limit=10, budget=1000 * MB) == ["r/big:1", "r/c:1"]
        assert choose(pool, limit=10, budget=0) == ["r/big:1", "r/a:1", "r/b:1", "r/c:1"]

    def test_only_restricts_to_the_listed_images(self) -> None:
        pool = [c("r/a:1", score=5), c("r/b:1", score=1)]
        assert choose(pool, limit=5, only=["r/b:1", "r/zzz:1"]) == ["r/b:1"]

    def test_equal_scores_keep_the_nic_order(self) -> None:
        pool = [c("r/x:1"), c("r/y:1"), c("r/z:1")]
        assert choose(pool, limit=2) == ["r/x:1", "r/y:1"]


class TestCandidates:
    def test_joins_images_and_popularity(self) -> None:
        images = {
            "images": [
                {
                    "image": "r/old:1",
                    "fetched_at": 10,
                    "blobs_known": 3,
                    "blobs_stored": 3,
                    "bytes_stored": 5,
                },
                {
                    "image": "r/new:1",
                    "fetched_at": 20,
                    "blobs_known": 3,
                    "blobs_stored": 2,
                    "bytes_stored": 7,
                },
                {
                    "image": "r/none:1",
                    "fetched_at": 30,
                    "blobs_known": 0,
                    "blobs_stored": 0,
                    "bytes_stored": 0,
                },
            ]
        }
        popular = {"images": [{"image": "r/old:1", "score": 2.5}]}
        got = candidates(images, popular)
        assert got == [  # newest first, so equal scores prefer what the NIC fetched last
            Candidate("r/none:1", 0, False, 0.0),
            Candidate("r/new:1", 7, False, 0.0),
            Candidate("r/old:1", 5, True, 2.5),
        ]


class TestCli:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--budget", "lots"], "--budget"),
            (["--limit", "0"], "--limit"),
            (["--runtime", "podman"], "--runtime"),
        ],
    )
    def test_bad_options_are_readable(self, args: list[str], message: str) -> None:
        result = CliRunner().invoke(main, [*ONCE, *args])
        assert result.exit_code == 2 and message in result.output

    def test_unreachable_cache_is_a_clean_error(self) -> None:
        result = CliRunner().invoke(main, ONCE)
        assert result.exit_code == 1 and "unreachable" in result.output
