"""`eviction:` chooses the policy the store evicts through, and what it learned survives a
restart (nic_cache/policy_state.py): on the store with its real index, then on the real
service (gunicorn) against the seeded registry."""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faas_accel.testbed.cache import Cache
from faas_accel.testbed.oci import skopeo_copy
from faas_accel.testbed.procs import wait_for
from nic_cache.config import load_config
from nic_cache.policy import make_policy
from nic_cache.policy_state import MAX_BYTES, SAVE_EVERY, forget_live
from nic_cache.store import Store
from tests.conftest import LAB, Seeded
from tests.support.clock import FakeClock


def put(store: Store, clock: FakeClock, data: bytes) -> str:
    clock.now += 1
    return store.put_bytes("sha256:" + hashlib.sha256(data).hexdigest(), data, None).digest


def saved_state(data_dir: Path, name: str) -> dict[str, Any] | None:
    """The policy state row `name` in the index, as the store last saved it."""
    with sqlite3.connect(data_dir / "index.sqlite") as db:
        try:
            row = db.execute("SELECT state FROM policy_state WHERE name = ?", (name,)).fetchone()
        except sqlite3.OperationalError:  # no eviction has run yet
            return None
    return None if row is None else dict(json.loads(row[0]))


def idle_times(state: dict[str, Any] | None, image: str) -> int:
    """How many idle times the predictive state learned for `image` (-1: unknown image)."""
    if state is None or image not in state["images"]:
        return -1
    return int(state["images"][image]["hist"]["n"])


class TestStore:
    @pytest.mark.parametrize(
        ("policy", "victim"),
        [("lru", "a"), ("lfu", "a"), ("s3fifo", "a"), ("gdsf", "b"), ("predictive", "b")],
    )
    def test_evicts_through_the_configured_policy(
        self, tmp_path: Path, clock: FakeClock, policy: str, victim: str
    ) -> None:
        """a (100 B, oldest), b (300 B), c (100 B); 95 B must go. Recency and the FIFOs drop a;
        the size-aware policies drop b, whose bytes cost three times a's to keep."""
        config = load_config(f"data_dir: {tmp_path}\ncapacity: 450\neviction: {policy}\n", {})
        from nic_cache.app import open_store

        store = open_store(config)
        store.clock = clock
        digests = {name: put(store, clock, name.encode() * size) for name, size in
                   (("a", 100), ("b", 300), ("c", 100))}  # fmt: skip
        assert store.evict() == [digests[victim]]
        assert saved_state(tmp_path, policy) is not None
        store.close()

    def test_a_restart_keeps_what_predictive_learned(self, tmp_path: Path, clock: FakeClock) -> None:
        """Three pulls of f teach two idle times. After a restart whose pruning leaves one row
        of the pull log, one more pull makes three: the two came back from the index."""
        make = functools.partial(make_policy, "predictive", bin_seconds=1.0)

        def open_store() -> Store:
            return Store(str(tmp_path), capacity=350, low_watermark=0.9, clock=clock, policy=make,
                         pull_log_max_rows=1)  # fmt: skip

        store = open_store()
        layer = put(store, clock, b"f" * 200)
        manifest = put(store, clock, b"manifest of f")
        store.link_manifest(manifest, [layer])
        for _ in range(3):
            clock.now += 100
            store.log_pull("lab/f:1", manifest, "vm1")
        put(store, clock, b"x" * 200)  # over 350 bytes: evict
        assert store.evict() != []
        assert idle_times(saved_state(tmp_path, "predictive"), "lab/f:1") == 2
        store.close()
        forget_live()  # a new process knows only what the index holds

        store = open_store()
        store.prune()  # what `cache serve` does at start
        assert len(store.pulls()) == 1
        clock.now += 100
        store.log_pull("lab/f:1", manifest, "vm1")
        put(store, clock, b"y" * 200)
        store.evict()
        state = saved_state(tmp_path, "predictive")
        assert idle_times(state, "lab/f:1") == 3
        assert state is not None and state["images"]["lab/f:1"]["keys"] == [manifest, layer]
        store.close()


    def test_a_worker_keeps_its_predictive_policy_live_between_saves(
        self, tmp_path: Path, clock: FakeClock
    ) -> None:
        """An eviction within SAVE_EVERY of the last save learns the new pulls from the log
        into the worker's live policy but does not rewrite the state; the next one after it does,
        with everything learned."""
        forget_live()
        store = Store(str(tmp_path), capacity=350, low_watermark=0.9, clock=clock,
                      policy=functools.partial(make_policy, "predictive", bin_seconds=1.0))  # fmt: skip
        layer = put(store, clock, b"f" * 200)
        manifest = put(store, clock, b"manifest of f")
        store.link_manifest(manifest, [layer])

        def pull_and_evict(filler: bytes) -> None:
            clock.now += 10
            store.log_pull("lab/f:1", manifest, "vm1")
            put(store, clock, filler * 200)
            assert store.evict() != []

        pull_and_evict(b"x")  # the first eviction saves: one pull, no idle time yet
        assert idle_times(saved_state(tmp_path, "predictive"), "lab/f:1") == 0
        pull_and_evict(b"y")  # 11 s after that save: kept live, not saved
        assert idle_times(saved_state(tmp_path, "predictive"), "lab/f:1") == 0
        clock.now += SAVE_EVERY
        pull_and_evict(b"z")
        assert idle_times(saved_state(tmp_path, "predictive"), "lab/f:1") == 2
        store.close()

    def test_predictive_adopts_only_a_policy_that_learns_alike(self) -> None:
        """Another `lead` or `capacity` (plans only) may share what was learned; other
        bins may not."""
        old = make_policy("predictive", bin_seconds=1.0)
        old.on_use("i", ["k"], 0.0)
        assert make_policy("predictive", bin_seconds=1.0, lead=5.0, capacity=9).adopt(old)
        assert not make_policy("predictive", bin_seconds=2.0).adopt(old)
        assert not make_policy("lru").adopt(old)

    def test_predictive_state_at_its_caps_fits_the_saved_bound(self) -> None:
        """2048 images of 64 digests each, every digest's size known, every one of the 240 bins
        used: the state still fits under MAX_BYTES, and images past max_images or digests past
        MAX_KEYS are dropped."""
        digest = "sha256:" + "ab" * 32
        hist = {"counts": {str(b): 1000 for b in range(300)}, "n": 300_000, "total": 1e9, "total_sq": 1e15}
        images = {f"registry.example/team-{i}/function-{i}:v{i}": {
            "keys": [f"{digest[:-6]}{i:03x}{k:03x}" for k in range(70)], "last": 1e9 + i, "hist": hist,
            "ewma": 600.0} for i in range(2100)}  # fmt: skip
        sizes = {key: 123_456_789 for image in images.values() for key in image["keys"]}
        p = make_policy("predictive")
        p.restore({"images": images, "sizes": sizes})
        state = p.state()
        assert len(state["images"]) == 2048 and len(state["sizes"]) == 2048 * 64
        assert max(len(img["keys"]) for img in state["images"].values()) == 64
        assert max(len(img["hist"]["counts"]) for img in state["images"].values()) == 240
        assert len(json.dumps(state, separators=(",", ":"))) < MAX_BYTES


@pytest.mark.integration
class TestService:
    def test_small_cache_evicts_through_predictive_and_a_restart_keeps_it(
        self, cache_factory: Callable[..., Cache], seeded: Seeded, tmp_path: Path
    ) -> None:
        """A 3 MB cache configured with `eviction: predictive` (10 ms bins: pulls here are
        milliseconds apart). Two pulls of hello, then multilayer (over 4 MB) forces evictions:
        the index holds the predictive state with hello's one idle time. After a restart (whose
        pruning keeps one pull-log row) a third pull of hello and multilayer again: two idle
        times, one of them known only from the saved state."""
        extra = {"capacity": "3MB", "pull_log_max_rows": 1,
                 "eviction": {"policy": "predictive", "bin_seconds": 0.01, "bins": 6000}}  # fmt: skip
        cache = cache_factory(default_upstream=LAB, extra=extra)
        hello = f"{LAB}/lab/hello:1"

        def pull(name: str, into: str) -> None:
            result = skopeo_copy(f"{cache.host}/{LAB}/lab/{name}:1", tmp_path / into)
            assert result.returncode == 0, result.stderr

        pull("hello", "h1")
        pull("hello", "h2")
        pull("multilayer", "m1")
        wait_for(lambda: idle_times(saved_state(cache.data_dir, "predictive"), hello) == 1, 30,
                 "an eviction to save hello's idle time")  # fmt: skip
        assert saved_state(cache.data_dir, "lru") is None
        cache.wait_idle()
        cache.stop()
        cache.start()
        with sqlite3.connect(cache.data_dir / "index.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM pulls").fetchone()[0] == 1
        pull("hello", "h3")
        pull("multilayer", "m2")
        wait_for(lambda: idle_times(saved_state(cache.data_dir, "predictive"), hello) == 2, 30,
                 "an eviction after the restart to add hello's second idle time")  # fmt: skip
