"""The pure policy core (nic_cache/policy): victim orders on tiny hand-worked traces, pins,
pacing arithmetic."""

from __future__ import annotations

import pytest

from nic_cache.policy import LRU, Entry, pacing
from nic_cache.policy.pins import pin_ceiling, pin_refusal, reconcile


def feed(policy: LRU, trace: str, sizes: dict[str, int] | None = None) -> None:
    """Replay `trace`, one letter per minute: a new letter is inserted, a known one read."""
    for t, key in enumerate(trace):
        if key in policy.sizes:
            policy.on_access(key, float(t))
        else:
            policy.on_insert(key, (sizes or {}).get(key, 1), float(t))


class TestLRU:
    @pytest.mark.parametrize(
        ("trace", "need", "keep", "pins", "victims"),
        [
            ("abc", 1, "", "", "a"),
            ("abca", 1, "", "", "b"),
            ("abca", 2, "", "", "bc"),
            ("abca", 2, "b", "", "ca"),
            ("abca", 2, "", "c", "ba"),
            ("abc", 9, "", "", "abc"),
            ("abc", 0, "", "", ""),
            ("abc", 2, "", "abc", ""),
        ],
        ids=["oldest", "read-again", "two", "keep", "pinned", "all-it-can", "nothing-needed", "all-pinned"],
    )
    def test_victim_order(self, trace: str, need: int, keep: str, pins: str, victims: str) -> None:
        """Least recently read first, never a pinned key or one the caller keeps."""
        lru = LRU()
        feed(lru, trace)
        for key in pins:
            lru.pin(key)
        assert lru.victims(need, 10.0, keep=list(keep)) == list(victims)

    def test_sizes_decide_how_many_go(self) -> None:
        """Victims stop once their bytes cover the need."""
        lru = LRU()
        feed(lru, "abc", {"a": 5, "b": 5, "c": 5})
        assert lru.victims(6, 10.0) == ["a", "b"]

    def test_removed_keys_are_gone(self) -> None:
        lru = LRU()
        feed(lru, "abc")
        lru.on_remove("a")
        assert lru.victims(1, 10.0) == ["b"]

    def test_load_follows_the_index_order(self) -> None:
        """Rows replay as (last_access, created): an old blob read late outlives a newer idle one."""
        rows = [
            Entry("x", 1, created=1, last_access=5, hits=1),
            Entry("y", 1, created=5, last_access=5),
            Entry("z", 1, created=3, last_access=3),
            Entry("p", 1, created=0, last_access=0, pinned=True),
        ]
        lru = LRU()
        lru.load(rows)
        assert lru.victims(9, 10.0) == ["z", "x", "y"]


class TestPins:
    @pytest.mark.parametrize(
        ("capacity", "held", "adding", "refused"),
        [(1000, 0, 450, False), (1000, 400, 50, False), (1000, 400, 51, True), (0, 10**9, 10**9, False)],
        ids=["fits", "exactly-the-ceiling", "one-byte-over", "unlimited-store"],
    )
    def test_ceiling(self, capacity: int, held: int, adding: int, refused: bool) -> None:
        """Pins may take half the capacity below the low watermark (0.9 here: 450 of 1000)."""
        why = pin_refusal(capacity=capacity, low_watermark=0.9, held=held, adding=adding)
        assert (why is not None) is refused
        if refused:
            assert why == "not pinned: pinned content would take 451 bytes, more than 450 " \
                          "(50% of the capacity below the low watermark)"  # fmt: skip
        assert pin_ceiling(1000, 0.9) == 450

    def test_reconcile(self) -> None:
        assert reconcile({"a", "b", "c"}, {"c", "d"}) == (["a", "b"], ["d"])
        assert reconcile(set(), set()) == ([], [])


class TestPacing:
    def test_a_fresh_bucket_hands_out_its_burst(self) -> None:
        """A new bucket holds 0.1 s of bandwidth; taking more goes into debt, paid at the rate."""
        state, wait = pacing.take(None, now=10.0, rate=1_000_000, nbytes=100_000)
        assert (state.tokens, state.stamp, wait) == (0.0, 10.0, 0.0)
        state, wait = pacing.take(state, now=10.0, rate=1_000_000, nbytes=500_000)
        assert (state.tokens, wait) == (-500_000, 0.5)
        state, wait = pacing.take(state, now=10.5, rate=1_000_000, nbytes=0)
        assert (state.tokens, wait) == (0.0, 0.0)

    def test_tokens_never_exceed_the_burst_and_a_future_stamp_resets(self) -> None:
        state, _ = pacing.take(pacing.Bucket(0.0, 0.0), now=100.0, rate=1_000_000, nbytes=0)
        assert state.tokens == 100_000
        state, _ = pacing.take(pacing.Bucket(-(10**9), 500.0), now=100.0, rate=1_000_000, nbytes=0)
        assert state == pacing.Bucket(100_000, 100.0)
        assert pacing.burst(1) == 64 * 1024

    @pytest.mark.parametrize(
        ("now", "until", "progress_at", "live", "ok"),
        [(5, 4, 4, False, True), (3, 4, 0, False, False), (5, 4, 4, True, False), (10, 4, 4, True, True)],
        ids=["paid-and-quiet", "in-debt", "live-miss-pauses", "keepalive-chunk"],
    )
    def test_may_read(self, now: float, until: float, progress_at: float, live: bool, ok: bool) -> None:
        """A fill reads on once its debt is paid, except while live misses wait (then once per
        KEEPALIVE seconds so the upstream keeps the connection)."""
        assert pacing.may_read(now=now, until=until, progress_at=progress_at, live_misses=live) is ok
