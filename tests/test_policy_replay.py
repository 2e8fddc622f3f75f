"""The policy replay driver (load/bench_policy_replay.py) counts hits right: a hand-made
three-function trace through a real registry and a real cache with LRU, whose hits are
worked out by hand, and the simulator on the same trace agreeing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faas_accel.bench.policy_sim import ImageModel
from faas_accel.bench.trace import Trace
from faas_accel.testbed.registry import Registry
from load.bench_policy_replay import Pull, push_workload, run_one
from load.replay_workload import Workload, offsets, slice_trace
from tests.conftest import require

# one cold start a minute (keep-alive 0): a b a c b a c a
TRACE = Trace("by hand", ("a", "b", "c"), ((0, 2, 5, 7), (1, 4), (3, 6)), 8, 8)
# same-sized images, no shared base: each image is its manifest, config and one 40 kB layer
MODEL = ImageModel(own_mb=0.04, own_sigma=0.0, bases=0, keepalive=0, learn=2)
# LRU holding two images: minute 2 (a) hits; c evicts b, b evicts a, a evicts c, c evicts b;
# minute 7 (a) hits. Minutes 2-7 are scored: 2 hits of 6.
HITS = [2, 7]


@pytest.fixture
def upstream() -> Iterator[Registry]:
    require("docker-registry", root=False)
    with Registry() as up:
        yield up


class TestWorkload:
    def test_slice_renumbers_minutes_and_drops_idle_functions(self) -> None:
        """Minutes 3-6 of the hand trace: c from 0, a at 2, b at 1; nothing is lost or added."""
        part = slice_trace(TRACE, 3, 4)
        assert (part.functions, part.active, part.minutes) == (("a", "b", "c"), ((2,), (1,), (0, 3)), 4)
        assert slice_trace(TRACE, 0, 1).functions == ("a",)

    def test_cold_starts_are_spread_over_their_minute(self) -> None:
        """Two cold starts in one minute start half a minute apart, in function order."""
        work = Workload.build(Trace("t", ("x", "y"), ((0, 1), (1,)), 2, 3), MODEL, 1.0)
        assert [(e.minute, e.fn) for e in work.events] == [(0, 0), (1, 0), (1, 1)]
        assert offsets(work.events, 2.0) == [0.0, 2.0, 3.0]


@pytest.mark.integration
class TestReplay:
    def test_lru_hits_worked_out_by_hand(self, upstream: Registry) -> None:
        """The service and the simulator both find the two hits a hand-run LRU finds."""
        work = Workload.build(TRACE, MODEL, 1.0)
        assert len({size for size in work.images.sizes.values()}) == 1
        total = push_workload(upstream, work)
        pulls: list[Pull] = []
        got = run_one(work, upstream.url, "lru", total * 2 // 3, minute_seconds=0.3, concurrency=1,
                      workers=1, record=pulls)  # fmt: skip
        assert [p.error for p in pulls] == [None] * 8
        assert [p.minute for p in pulls if p.hit] == HITS
        assert (got["scored_pulls"], got["hits"], got["hit_ratio"]) == (6, 2, pytest.approx(1 / 3))
        assert got["evictions"] == 4
        assert work.simulate(2 / 3, ["lru"]) == {"lru": pytest.approx(1 / 3)}
