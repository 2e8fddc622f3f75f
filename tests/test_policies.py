"""The policies of nic_cache/policy beyond LRU, on tiny traces worked out by hand: LFU with
aging, GDSF, S3-FIFO, predictive (idle-time histograms), Belady, and the registry."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

import pytest

from nic_cache.policy import (
    GDSF,
    LFU,
    LRU,
    S3FIFO,
    Belady,
    Policy,
    PolicyError,
    Predictive,
    Prefetch,
    make_policy,
)
from nic_cache.policy.histogram import IdleHistogram

MIB = 1 << 20


P = TypeVar("P", bound=Policy)


def run(policy: P, ops: str, sizes: dict[str, int] | None = None) -> P:
    """Apply `ops`, one per second: `+k` insert, `.k` read, `-k` remove."""
    for t, op in enumerate(ops.split()):
        kind, key = op[0], op[1:]
        if kind == "+":
            policy.on_insert(key, (sizes or {}).get(key, 1), float(t))
        elif kind == ".":
            policy.on_access(key, float(t))
        else:
            policy.on_remove(key)
    return policy


class TestLFU:
    @pytest.mark.parametrize(
        ("ops", "need", "victims"),
        [
            ("+a +b +c .a .b", 1, "c"),
            ("+a +b +c .a .b", 2, "ca"),
            ("+a +b +c .b .a", 2, "cb"),
            ("+a +b .b .b +c .a", 3, "cab"),
        ],
        ids=["least-read", "ties-oldest-touch-first", "ties-follow-touch-order", "all-by-count"],
    )
    def test_victim_order(self, ops: str, need: int, victims: str) -> None:
        """Fewest reads first; among equal counts, the one touched longest ago."""
        assert run(LFU(), ops).victims(need, 10.0) == list(victims)

    def test_aging_lets_a_newcomer_outrank_stale_counts(self) -> None:
        """After evicting c (priority 1) the age is 1, so a new key d starts at 2 and ties with
        a and b, read twice long ago; without aging d (1) would go next."""
        lfu = run(LFU(), "+a +b +c .a .b")
        assert lfu.victims(1, 5.0) == ["c"]
        run(lfu, "-c +d")
        assert lfu.age == 1.0
        assert lfu.victims(1, 7.0) == ["a"]
        assert lfu.priority == {"a": 2.0, "b": 2.0, "d": 2.0}


class TestGDSF:
    @pytest.mark.parametrize(
        ("ops", "sizes", "weight", "victims"),
        [
            ("+a +b .a .b", {"a": MIB, "b": 4 * MIB}, 1.0, "b"),
            ("+a +b .a .b", {"a": MIB, "b": 4 * MIB}, 0.0, "a"),
            ("+a +b .b .b .b .b .b .b .b", {"a": MIB, "b": 4 * MIB}, 1.0, "a"),
            ("+a +b .b .b", {"a": MIB, "b": 4 * MIB}, 1.0, "b"),
        ],
        ids=["big-goes-first", "size-blind-is-lfu", "reads-pay-for-room", "too-few-reads"],
    )
    def test_size_awareness(self, ops: str, sizes: dict[str, int], weight: float, victims: str) -> None:
        """Priority = uses (the insert plus the reads) / size in MiB: a (1 MiB, 2 uses) = 2 beats
        b (4 MiB, 2 uses) = 0.5; with 8 uses b (2.0) outranks a (1 use: 1.0), with 3 it (0.75)
        does not."""
        assert GDSF(size_weight=weight).victims(1, 10.0) == []
        policy = run(GDSF(size_weight=weight), ops, sizes)
        assert policy.victims(1, 10.0) == list(victims)

    def test_age_survives_a_restart(self) -> None:
        gdsf = run(GDSF(), "+a +b .b", {"a": 2 * MIB, "b": MIB})
        assert gdsf.victims(1, 5.0) == ["a"]
        fresh = GDSF()
        fresh.restore(json.loads(json.dumps(gdsf.state())))
        assert fresh.age == 0.5


class TestS3FIFO:
    def test_one_time_reads_leave_first_and_read_ones_move_to_main(self) -> None:
        """Small holds a, b, c (all bytes, over its 30 %): a was read, so it moves to main;
        b was not, so it is the victim; c stays in small."""
        s3 = run(S3FIFO(small_share=0.3), "+a +b +c .a")
        assert s3.victims(1, 5.0) == ["b"]
        assert s3.state()["main"] == ["a"]

    def test_the_ghost_sends_a_returning_key_to_main(self) -> None:
        s3 = run(S3FIFO(small_share=0.3), "+a +b +c .a")
        s3.victims(1, 5.0)
        run(s3, "-b")
        assert s3.state()["ghost"] == ["b"]
        run(s3, "+b")
        assert s3.state()["main"] == ["a", "b"]
        assert s3.state()["ghost"] == []

    def test_main_gives_a_read_key_another_round(self) -> None:
        """Main = [a, b], small = [c]; a was read again. Freeing 2: c (unread, small) goes,
        then main's oldest a is read (counter 1 -> 0, back to the head) and b goes."""
        s3 = run(S3FIFO(small_share=0.3), "+a +b +c .a")
        s3.victims(1, 5.0)
        run(s3, "-b +b .a")
        assert s3.victims(2, 9.0) == ["c", "b"]
        assert list(s3.order(9.0)) == ["c", "b", "a"]

    def test_order_is_a_preview(self) -> None:
        """`order` does not move anything; `victims` does."""
        s3 = run(S3FIFO(small_share=0.3), "+a +b +c .a")
        assert list(s3.order(5.0)) == ["b", "c", "a"]
        assert s3.state()["main"] == []

    def test_state_round_trip_adds_only_new_hits(self) -> None:
        from nic_cache.policy import Entry

        s3 = S3FIFO(small_share=0.3)
        s3.load([Entry("a", 1, 0, 3, hits=5), Entry("b", 1, 1, 1), Entry("c", 1, 2, 2)])
        s3.victims(1, 5.0)  # a (read) moves to main with counter 0; b goes
        saved = json.loads(json.dumps(s3.state()))
        fresh = S3FIFO(small_share=0.3)
        fresh.restore(saved)
        fresh.load([Entry("a", 1, 0, 3, hits=5), Entry("c", 1, 2, 2)])
        assert fresh.state()["main"] == ["a"]
        assert fresh.q.freq["a"] == 0  # not min(3, 5): those hits were already counted


class TestBelady:
    def test_furthest_next_use_first(self) -> None:
        """At t=1: c is never used again, a at 5, b at 3; then larger first on ties."""
        b = run(Belady({"a": [0, 5], "b": [1, 3], "c": [2], "d": [2]}), "+a +b +c +d", {"d": 2})
        assert list(b.order(2.5)) == ["d", "c", "a", "b"]
        assert b.next_use("a", 5.0) == math.inf


ALL = [LRU, LFU, GDSF, S3FIFO, lambda: Predictive(), lambda: Belady({})]


class TestEveryPolicy:
    @pytest.mark.parametrize("make", ALL, ids=["lru", "lfu", "gdsf", "s3fifo", "predictive", "belady"])
    def test_pins_and_keep_are_never_victims(self, make: Any) -> None:
        policy = run(make(), "+a +b +c +d .a")
        policy.pin("a")
        policy.pin("b")
        assert policy.victims(10, 9.0, keep=["c"]) == ["d"]
        assert sorted(policy.order(9.0)) == ["a", "b", "c", "d"]

    @pytest.mark.parametrize("make", ALL, ids=["lru", "lfu", "gdsf", "s3fifo", "predictive", "belady"])
    def test_nothing_needed_nothing_chosen(self, make: Any) -> None:
        assert run(make(), "+a +b").victims(0, 9.0) == []


def use(p: Predictive, image: str, times: list[float], key: str | None = None, size: int = MIB) -> None:
    """Uses of `image` (whose one key is `key`, stored at the first use) at `times`."""
    key = key or f"{image}-layer"
    for t in times:
        p.on_use(image, [key], t)
        if key in p.sizes:
            p.on_access(key, t)
        else:
            p.on_insert(key, size, t)


class TestIdleHistogram:
    @pytest.mark.parametrize(
        ("idles", "head", "tail", "after_0", "after_700"),
        [
            ([600, 600, 600, 600], 600, 660, 630, None),
            ([600, 620, 3000, 600], 600, 3060, (3 * 630 + 3030) / 4, 3030),
            ([100000, 600], 600, 14400, (630 + 100000) / 2, 100000),
        ],
        ids=["steady", "one-long", "out-of-bounds"],
    )
    def test_percentiles_and_expectations(
        self, idles: list[float], head: float, tail: float, after_0: float, after_700: float | None
    ) -> None:
        """1-minute bins over 4 h: the head rounds down to its bin's start, the tail up to its
        end; expected_after(s) averages bin midpoints (OOB at their own value) beyond s."""
        h = IdleHistogram(60.0, 240)
        for idle in idles:
            h.add(idle)
        assert h.percentile(5, upper=False) == head
        assert h.percentile(99, upper=True) == tail
        assert h.expected_after(0) == pytest.approx(after_0)
        assert h.expected_after(700) == (None if after_700 is None else pytest.approx(after_700))

    def test_state_is_bounded_by_the_bins(self) -> None:
        h = IdleHistogram(60.0, 10)
        for idle in range(0, 100_000, 7):
            h.add(idle)
        assert len(h.state()["counts"]) == 10
        back = IdleHistogram.from_state(60.0, 10, json.loads(json.dumps(h.state())))
        assert (back.n, back.oob) == (h.n, h.oob)
        assert back.cv() == pytest.approx(h.cv())


class TestPredictive:
    def test_window_from_head_and_tail_with_margin(self) -> None:
        """Used every 10 min: idle times 600 s; head = 600 * 0.9, tail = 660 * 1.1 after the
        last use (2400)."""
        p = Predictive()
        use(p, "f", [0, 600, 1200, 1800, 2400])
        assert p.window("f") == pytest.approx((2400 + 540, 2400 + 726))
        assert p.predict("f", 2400) == pytest.approx(2400 + 630)

    @pytest.mark.parametrize(
        ("times", "why"),
        [([0, 600, 1200, 1800], "three idle times, four needed"),
         ([0, 60, 660, 3660, 3720], "idle times 60..3000 s: CV above 0.3"),
         ([0, 20000, 40000, 60000, 80000], "all past the 4 h range")],
        ids=["few-samples", "high-cv", "out-of-bounds"],
    )  # fmt: skip
    def test_unrepresentative_histograms_have_no_window(self, times: list[float], why: str) -> None:
        p = Predictive()
        use(p, "f", times)
        assert p.window("f") is None, why

    def test_fallback_is_the_time_series(self) -> None:
        """Not representative: the next use is the EWMA (weight 0.3) of the idle times after
        the last use; once overdue it recedes as the image stays idle."""
        p = Predictive()
        use(p, "f", [0, 1000, 3000])
        ewma = 0.3 * 2000 + 0.7 * 1000
        assert p.predict("f", 3100) == pytest.approx(3000 + ewma)
        assert p.predict("f", 5000) == pytest.approx(5000 + 2000)

    def test_past_the_tail_the_image_recedes(self) -> None:
        p = Predictive()
        use(p, "f", [0, 600, 1200, 1800, 2400])
        assert p.predict("f", 2400 + 1000) == pytest.approx(2400 + 1000 + 1000)

    @pytest.mark.parametrize(
        ("size_weight", "victims"),
        [(0.0, ["q-layer"]), (1.0, ["p-layer"])],
        ids=["furthest-first", "size-aware"],
    )
    def test_eviction_by_predicted_next_use(self, size_weight: float, victims: list[str]) -> None:
        """p every 10 min (10 MiB), q every 60 min (1 MiB), both just used at t=10800: q is
        needed furthest ahead (3630 s vs 630 s), but keeping p costs 630 * 10 > 3630 * 1."""
        p = Predictive(size_weight=size_weight)
        use(p, "p", [600.0 * i for i in range(19)], size=10 * MIB)
        use(p, "q", [3600.0 * i for i in range(4)], size=MIB)
        assert p.victims(1, 10800.0) == victims

    def test_prefetch_plan_opens_lead_seconds_before_the_window_once(self) -> None:
        p = Predictive()
        use(p, "f", [0, 600, 1200, 1800, 2400], size=5 * MIB)
        p.on_remove("f-layer")
        assert p.prefetch_plan(2940 - 121, 10**9) == []
        assert p.prefetch_plan(2940 - 120, 10**9) == [Prefetch("f", ("f-layer",), 5 * MIB, 2940.0)]
        assert p.prefetch_plan(2940, 10**9) == []  # planned once for this use
        assert p.prefetch_plan(2940, 0) == []

    def test_prefetch_respects_the_budget(self) -> None:
        p = Predictive()
        use(p, "f", [0, 600, 1200, 1800, 2400], size=5 * MIB)
        p.on_remove("f-layer")
        assert p.prefetch_plan(2900, 4 * MIB) == []
        assert [x.image for x in p.prefetch_plan(2900, 5 * MIB)] == ["f"]

    @pytest.mark.parametrize(
        ("g_times", "planned"),
        [([2640, 2700, 2760, 2820, 2880], []), ([300, 900, 1500, 2100, 2700], ["f"])],
        ids=["g-needed-sooner-stays", "g-needed-later-makes-room"],
    )
    def test_prefetch_displaces_only_costlier_keys(self, g_times: list[float], planned: list[str]) -> None:
        """The cache (5 MiB) is full of g's 5 MiB key. At 2900 f (5 MiB) is expected at
        2400 + 630 = 3030. g used every minute until 2880 is expected at 2970: cheaper to
        keep, f is not planned; g used every 10 min until 2700 is expected at 3330: f is."""
        p = Predictive(capacity=5 * MIB)
        use(p, "f", [0, 600, 1200, 1800, 2400], size=5 * MIB)
        p.on_remove("f-layer")
        use(p, "g", g_times, size=5 * MIB)
        assert [x.image for x in p.prefetch_plan(2900, 10**9)] == planned

    def test_state_round_trip_and_bounds(self) -> None:
        p = Predictive(max_images=2)
        use(p, "old", [0, 600])
        use(p, "f", [0, 600, 1200, 1800, 2400])
        use(p, "g", [100, 200, 3000])
        state = json.loads(json.dumps(p.state()))
        assert sorted(state["images"]) == ["f", "g"]
        fresh = Predictive(max_images=2)
        fresh.restore(state)
        assert fresh.window("f") == p.window("f")
        assert fresh.predict("g", 3500) == p.predict("g", 3500)
        assert fresh.key_size == {"f-layer": MIB, "g-layer": MIB}


class TestRegistry:
    @pytest.mark.parametrize(
        ("name", "params", "message", "param"),
        [
            ("lfru", {}, "unknown policy 'lfru' (known: lru, lfu, gdsf, s3fifo, predictive)", None),
            ("belady", {}, "unknown policy 'belady' (known: lru, lfu, gdsf, s3fifo, predictive)", None),
            ("lru", {"size": 1}, "policy 'lru' has no parameter 'size' (it takes none)", "size"),
            ("gdsf", {"size_wieght": 1}, "policy 'gdsf' has no parameter 'size_wieght' (known: size_weight)",
             "size_wieght"),
            ("predictive", {"bins": "many"}, "policy 'predictive': bins: need a whole number, got 'many'",
             "bins"),
            ("predictive", {"bins": 2.5}, "policy 'predictive': bins: need a whole number, got 2.5", "bins"),
            ("predictive", {"prefetch": 1}, "policy 'predictive': prefetch: need true or false, got 1",
             "prefetch"),
            ("predictive", {"bins": 0}, "policy 'predictive': bins: need 1 to 10080 bins, got 0", "bins"),
            ("s3fifo", {"small_share": 1.5},
             "policy 's3fifo': small_share: need a fraction between 0 and 1, got 1.5", "small_share"),
        ],
        ids=["unknown", "offline-only", "no-params", "typo", "not-a-number", "not-whole", "not-bool",
             "out-of-range", "fraction"],
    )  # fmt: skip
    def test_bad_names_and_params(
        self, name: str, params: dict[str, Any], message: str, param: str | None
    ) -> None:
        with pytest.raises(PolicyError) as err:
            make_policy(name, **params)
        assert str(err.value) == message
        assert err.value.param == param

    def test_good_params_are_converted(self) -> None:
        p = make_policy("predictive", bins=120, max_cv=1, prefetch=False)
        assert isinstance(p, Predictive)
        assert (p.bins, p.max_cv, p.prefetch) == (120, 1.0, False)
        assert isinstance(make_policy("s3fifo"), S3FIFO)
