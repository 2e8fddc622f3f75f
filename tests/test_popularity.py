"""Tests for nic_cache.popularity: decayed scores and top-K over a pull log recorded in a real Store."""

from __future__ import annotations

import pytest

from nic_cache.popularity import Popularity, Use, rank, weight
from nic_cache.store import Store
from tests.support.clock import FakeClock

DAY = 86400.0
A, B, C, D = (f"registry.lab/lab/{n}:1" for n in ("a", "b", "c", "d"))


@pytest.fixture
def clock() -> FakeClock:
    """Late enough that entries days in the past keep positive timestamps."""
    return FakeClock(1_000_000.0)


def record(store: Store, clock: FakeClock, log: list[tuple[float, str, str, str]]) -> None:
    """Write `(days ago, image, client, kind)` entries through Store.log_pull at their times."""
    now = clock.now
    for days_ago, image, client, kind in sorted(log, key=lambda e: -e[0]):
        clock.now = now - days_ago * DAY
        store.log_pull(image, None, client, kind=kind)
    clock.now = now


def ranked(store: Store, clock: FakeClock, **kw: object) -> list[Popularity]:
    return rank((Use.from_row(r) for r in store.pulls()), now=clock.now, **kw)  # type: ignore[arg-type]


class TestWeight:
    @pytest.mark.parametrize(
        ("age", "half_life", "expected"),
        [(0, DAY, 1.0), (DAY, DAY, 0.5), (3 * DAY, DAY, 0.125), (DAY / 2, DAY, 2**-0.5),
         (-60, DAY, 1.0), (30 * DAY, 0, 1.0)],
        ids=["fresh", "one-half-life", "three-half-lives", "half-a-half-life", "future", "no-decay"],
    )  # fmt: skip
    def test_table(self, age: float, half_life: float, expected: float) -> None:
        """A use counts 0.5 ** (age / half_life); future uses count fully; 0 disables decay."""
        assert weight(age, half_life) == pytest.approx(expected)


class TestRank:
    def test_top_k_on_a_recorded_pull_log(self, store: Store, clock: FakeClock) -> None:
        """Counts, distinct clients and last use come from the log; the top 2 by score are kept."""
        record(store, clock, [
            (0.0, A, "vm1", "pull"), (0.1, A, "vm2", "pull"), (0.2, A, "vm1", "deploy"),
            (0.0, B, "vm3", "pull"), (0.5, B, "vm3", "pull"),
            (0.3, C, "vm1", "pull"),
        ])  # fmt: skip
        top = ranked(store, clock, half_life=DAY, limit=2)
        assert [p.image for p in top] == [A, B]
        a, b = top
        assert (a.pulls, a.deploys, a.clients, a.last_seen) == (2, 1, 2, clock.now)
        assert a.score == pytest.approx(1 + 2**-0.1 + 2**-0.2)
        assert (b.pulls, b.deploys, b.clients, b.uses) == (2, 0, 1, 2)
        assert b.score == pytest.approx(1 + 2**-0.5)

    def test_decay_lets_recent_use_beat_old_volume(self, store: Store, clock: FakeClock) -> None:
        """Four pulls three days ago lose to two pulls today with a 1-day half-life, and win
        with decay turned off."""
        record(
            store, clock, [*[(3.0, A, "vm1", "pull")] * 4, (0.0, B, "vm1", "pull"), (0.0, B, "vm2", "pull")]
        )
        decayed = ranked(store, clock, half_life=DAY)
        assert [(p.image, round(p.score, 3)) for p in decayed] == [(B, 2.0), (A, 0.5)]
        flat = ranked(store, clock, half_life=0)
        assert [(p.image, p.score) for p in flat] == [(A, 4.0), (B, 2.0)]

    def test_window_drops_old_uses(self, store: Store, clock: FakeClock) -> None:
        """Uses older than the window count for nothing, not even in the counts."""
        record(store, clock, [(8.0, A, "vm1", "pull"), (1.0, A, "vm2", "pull"), (10.0, C, "vm1", "pull")])
        top = ranked(store, clock, half_life=DAY, window=7 * DAY)
        assert [(p.image, p.pulls, p.clients) for p in top] == [(A, 1, 1)]

    def test_min_uses_counts_pulls_and_deploys(self, store: Store, clock: FakeClock) -> None:
        """`min_uses` compares pulls + deploys; images below it are dropped."""
        record(store, clock, [
            (0.0, A, "vm1", "pull"), (0.0, A, "vm1", "deploy"), (0.0, B, "vm1", "pull"),
            (0.0, C, "vm1", "deploy"), (0.0, C, "vm2", "deploy"), (0.0, C, "vm3", "deploy"),
        ])  # fmt: skip
        assert [p.image for p in ranked(store, clock, half_life=DAY, min_uses=2)] == [C, A]

    def test_ties_go_to_the_most_recent_then_by_name(self, store: Store, clock: FakeClock) -> None:
        """Equal scores are ordered by last use, then by image name, so the order is stable."""
        uses = [Use(100.0, B), Use(100.0, A), Use(50.0, C), Use(50.0, D)]
        assert [p.image for p in rank(uses, now=100.0, half_life=0)] == [A, B, C, D]

    def test_keep_filters_images(self) -> None:
        """Images `keep` rejects (e.g. of an unconfigured registry) are left out before the top K."""
        uses = [Use(1.0, "ghcr.io/x/y:1"), Use(1.0, "ghcr.io/x/y:1"), Use(1.0, A)]
        top = rank(uses, now=1.0, half_life=DAY, limit=1, keep=lambda i: i.startswith("registry.lab/"))
        assert [p.image for p in top] == [A]

    def test_empty_log(self) -> None:
        """No uses, no images."""
        assert rank([], now=0.0, half_life=DAY) == []
