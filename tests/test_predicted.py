"""The predicted prewarm: the plan the eviction policy makes from what it learned (pure, on
plain rows), the `predicted:` source in prewarm.yml, and the real thing — a cache under
gunicorn that learned a periodic pull, its `GET /api/v1/predicted`, and a schedule run that
fills what it names."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faas_accel.prewarm.errors import PrewarmConfigError
from faas_accel.prewarm.spec import PredictedSource, parse_prewarm
from faas_accel.testbed import oci
from faas_accel.testbed.cache import Cache
from nic_cache.config import EvictionConfig
from nic_cache.errors import NameInvalid, Unsupported
from nic_cache.policy import Entry, Predictive, Prefetch, make_policy
from nic_cache.policy.relearn import Use, relearn
from nic_cache.predicted import PlanRequest, parse_request, planning_policy, render
from tests.conftest import Seeded
from tests.test_prewarm import LAB, admin, cli, prewarm_yml, pull

A = ("m-a", "cfg-a", "base", "own-a")  # image a: manifest, config, a shared base, its own layer
B = ("m-b", "cfg-b", "base", "own-b")
SIZES = {"m-a": 1, "cfg-a": 1, "base": 100, "own-a": 50, "m-b": 1, "cfg-b": 1, "own-b": 70}


def every(image: str, keys: tuple[str, ...], period: float, n: int, start: float = 0.0) -> list[Use]:
    return [Use(start + i * period, image, keys) for i in range(n)]


def learned(entries: list[Entry], uses: list[Use], **params: float | bool) -> Predictive:
    policy = make_policy("predictive", bin_seconds=10, min_samples=3, **params)
    assert isinstance(policy, Predictive)
    # sizes of keys not stored are known from an earlier state (the index keeps them)
    state: dict[str, object] = {}
    assert relearn(policy, state, entries, uses) is None
    for key in SIZES:
        if key in policy.holders:
            policy.key_size.setdefault(key, SIZES[key])
    return policy


def stored(*keys: str, at: float = 0.0) -> list[Entry]:
    return [Entry(k, SIZES[k], at, at) for k in keys]


class TestPlan:
    def test_a_periodic_image_gone_from_the_store_is_planned_before_its_window(self) -> None:
        """Pulled every 100 s and evicted since: due at about 400 s, planned from 300 s with a
        100 s horizon, with only the blobs the store lacks (the shared base is stored)."""
        policy = learned(stored("base", "m-b", "cfg-b", "own-b"), every("a", A, 100, 4))
        policy.lead = 100
        (plan,) = policy.prefetch_plan(305, budget=10_000)
        assert (plan.image, plan.keys, plan.bytes) == ("a", ("m-a", "cfg-a", "own-a"), 52)
        assert 300 <= plan.due <= 400

    def test_the_cache_plans_an_image_still_missing_at_every_call(self) -> None:
        """With `once` off (the cache's read-only plan) a second call plans the image again;
        the simulator's default plans it once per predicted use."""
        for once, second in ((False, ["a"]), (True, [])):
            policy = learned(stored("base"), every("a", A, 100, 4), once=once)
            policy.lead = 100
            assert [p.image for p in policy.prefetch_plan(305, 10_000)] == ["a"]
            assert [p.image for p in policy.prefetch_plan(306, 10_000)] == second

    @pytest.mark.parametrize(
        ("uses", "now", "budget", "why"),
        [
            (every("a", A, 100, 4), 305, 51, "over the budget"),
            (every("a", A, 100, 4), 150, 10_000, "window opens after the horizon"),
            (every("a", A, 100, 2), 305, 10_000, "too few idle times to trust"),
            ([Use(t, "a", A) for t in (0, 100, 130, 400)], 405, 10_000, "too irregular"),
        ],
        ids=["budget", "horizon", "few-samples", "irregular"],
    )  # fmt: skip
    def test_nothing_is_planned(self, uses: list[Use], now: float, budget: int, why: str) -> None:
        """No plan when the image does not fit, is not due, or its pattern is not representative."""
        policy = learned(stored("base"), uses)
        policy.lead = 100
        assert policy.prefetch_plan(now, budget) == [], why

    def test_an_image_all_stored_is_not_planned(self) -> None:
        """A due image whose blobs are all stored needs no fetch."""
        policy = learned(stored(*A), every("a", A, 100, 4))
        policy.lead = 100
        assert policy.prefetch_plan(305, 10_000) == []

    def test_what_was_learned_before_a_restart_counts(self) -> None:
        """The saved state plus the uses since give the same plan as all uses at once."""
        first = learned([], every("a", A, 100, 2))
        again = make_policy("predictive", bin_seconds=10, min_samples=3, lead=100)
        assert isinstance(again, Predictive)
        assert relearn(again, first.state(), stored("base"), every("a", A, 100, 2, start=200)) is None
        again.key_size.update({k: SIZES[k] for k in A})
        assert [p.image for p in again.prefetch_plan(305, 10_000)] == ["a"]


class TestRequest:
    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            ({"budget": "2GiB", "horizon": "30m"}, PlanRequest(2 * 1024**3, 1800.0)),
            ({"budget": "1000"}, PlanRequest(1000, 1800.0)),
            ({"budget": "5MB", "horizon": "0s"}, PlanRequest(5_000_000, 0.0)),
        ],
        ids=["both", "default-horizon", "zero-horizon"],
    )  # fmt: skip
    def test_parses(self, args: dict[str, str], expected: PlanRequest) -> None:
        """Sizes and durations in the units the config files use."""
        assert parse_request(args) == expected

    @pytest.mark.parametrize(
        ("args", "error"),
        [
            ({}, "query parameter budget: not a size"),
            ({"budget": "lots"}, "query parameter budget: not a size"),
            ({"budget": "0"}, "query parameter budget: need 1 byte to 1PiB"),
            ({"budget": "1GiB", "horizon": "soon"}, "query parameter horizon: not a duration"),
            ({"budget": "1GiB", "horizon": "8d"}, "query parameter horizon: need 0s to 7d"),
            ({"budget": "1GiB", "limit": "3"}, "unknown query parameter 'limit'"),
        ],
        ids=["no-budget", "bad-budget", "zero-budget", "bad-horizon", "long-horizon", "unknown"],
    )  # fmt: skip
    def test_refuses(self, args: dict[str, str], error: str) -> None:
        """A bad query is a 400 NAME_INVALID naming the parameter."""
        with pytest.raises(NameInvalid, match=error) as exc:
            parse_request(args)
        assert exc.value.status == 400

    def test_the_configured_policy_plans_with_the_horizon_as_lead(self) -> None:
        """The policy `eviction:` names, with its parameters, the horizon as `lead`, and the
        cache's capacity unless one is configured."""
        policy = planning_policy(EvictionConfig(policy="predictive", params={"max_cv": 0.5}),
                                 horizon=600, capacity=10**9)  # fmt: skip
        assert isinstance(policy, Predictive)
        assert (policy.lead, policy.capacity, policy.max_cv, policy.once) == (600, 10**9, 0.5, False)
        mine = planning_policy(EvictionConfig(params={"capacity": 5}), horizon=0, capacity=10**9)
        assert isinstance(mine, Predictive) and mine.capacity == 5

    @pytest.mark.parametrize("name", ["lru", "lfu", "gdsf", "s3fifo"])
    def test_a_policy_that_predicts_nothing_is_refused(self, name: str) -> None:
        """Only a predicting policy plans; the others are refused, saying what to set."""
        with pytest.raises(Unsupported, match=f"eviction policy '{name}' predicts nothing"):
            planning_policy(EvictionConfig(policy=name), horizon=60, capacity=1)

    def test_render_lists_the_soonest_first(self) -> None:
        """The answer lists each image with its due time, missing bytes and blobs."""
        plan = [Prefetch("b", ("x",), 7, 20.0), Prefetch("a", ("y", "z"), 5, 10.0)]
        doc = render(plan, policy="predictive", now=1.0, request=PlanRequest(100, 60.0))
        assert doc == {"policy": "predictive", "now": 1.0, "budget": 100, "horizon": 60.0, "bytes": 12,
                       "images": [{"image": "a", "due": 10.0, "bytes": 5, "blobs": ["y", "z"]},
                                  {"image": "b", "due": 20.0, "bytes": 7, "blobs": ["x"]}]}  # fmt: skip


class TestSpec:
    def test_predicted_source(self) -> None:
        """`predicted: {budget, horizon}`; the horizon defaults to 30 minutes."""
        spec = parse_prewarm("schedules:\n  - {name: p, interval: 5m, source: {predicted: {budget: 2GiB}}}\n"
                             "  - {name: q, interval: 5m, source: {predicted: {budget: 1MB, horizon: 1h}}}\n",
                             {})  # fmt: skip
        assert spec.schedule("p").source == PredictedSource(budget=2 * 1024**3, horizon=1800.0)
        assert spec.schedule("q").source == PredictedSource(budget=1_000_000, horizon=3600.0)
        assert spec.schedule("q").source_dict() == {"predicted": {"budget": 1_000_000, "horizon": 3600.0}}

    @pytest.mark.parametrize(
        ("source", "error"),
        [
            ("{predicted: {horizon: 1h}}", "p.yml:4: schedules[0].source.predicted.budget: need the bytes"),
            ("{predicted: {budget: much}}", "p.yml:4: schedules[0].source.predicted.budget: not a size"),
            ("{predicted: {budget: 1GiB, horizon: later}}",
             "p.yml:4: schedules[0].source.predicted.horizon: not a duration"),
            ("{predicted: {budget: 1GiB, horizon: 30d}}",
             "p.yml:4: schedules[0].source.predicted.horizon: must be at most 7d"),
            ("{predicted: {budget: 1GiB, top: 3}}",
             "p.yml:4: schedules[0].source.predicted.top: unknown key 'top' (known: budget, horizon)"),
            ("{predicted: 2GiB}", "p.yml:4: schedules[0].source.predicted: must be a mapping"),
        ],
        ids=["no-budget", "bad-budget", "bad-horizon", "long-horizon", "unknown-key", "not-a-mapping"],
    )  # fmt: skip
    def test_errors_name_file_line_and_reason(self, source: str, error: str) -> None:
        """A bad `predicted:` key is refused with `file:line: key: reason`."""
        with pytest.raises(PrewarmConfigError) as exc:
            text = f"schedules:\n  - name: a\n    interval: 1m\n    source: {source}\n"
            parse_prewarm(text, {}, source="p.yml")
        assert str(exc.value).startswith(error), str(exc.value)


PERIOD = 2.0  # seconds between two pulls of the periodic image
EVICTION = {"policy": "predictive", "bin_seconds": 1, "min_samples": 3, "margin": 0.9}


def footprint(*images: oci.Image) -> int:
    """Bytes of the images' manifests, configs and layers, each blob once."""
    return sum({b.digest: b.size for img in images for b in img.blobs()}.values())


@pytest.mark.integration
class TestService:
    def test_a_learned_period_is_planned_and_a_schedule_fills_it(
        self, cache_factory: Callable[..., Cache], seeded: Seeded, tmp_path: Path
    ) -> None:
        """hello pulled once, app-a every 2 s, then app-b (over capacity: an eviction saves
        what was learned), then app-a and hello deleted: the plan names app-a only, with the
        blobs the store lacks (not the base app-b shares), and a `predicted` schedule run
        fetches exactly those; an LRU cache refuses to plan (405), a bad budget is a 400."""
        capacity = footprint(seeded.hello, seeded.app_a) + 64
        cache = cache_factory(extra={"eviction": EVICTION, "capacity": capacity})
        pull(cache, "hello")
        for i in range(5):
            if i:
                time.sleep(PERIOD)  # the workload itself: a function invoked every 2 s
            pull(cache, "app-a")
        pull(cache, "app-b")
        for name in ("app-a", "hello"):
            assert admin(cache, "DELETE", f"images/{LAB}/lab/{name}:1").status_code == 200
        own = [seeded.app_a.digest, seeded.app_a.config.digest, seeded.app_a.layers[-1].digest]
        assert not set(own) & cache.stored_blobs()
        answer = admin(cache, "GET", "predicted", params={"budget": "10MB", "horizon": "1h"})
        assert answer.status_code == 200, answer.text
        plan = answer.json()
        planned = [(i["image"], sorted(i["blobs"])) for i in plan["images"]]
        assert planned == [(f"{LAB}/lab/app-a:1", sorted(own))]
        assert plan["policy"] == "predictive"
        assert plan["bytes"] == footprint(seeded.app_a) - seeded.app_a.layers[0].size

        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: soon\n    interval: 1h\n"
                        "    source: {predicted: {budget: 10MB, horizon: 1h}}\n")  # fmt: skip
        before = seeded.registry.blob_gets()
        done = cli("once", "soon", "--config", str(p), "--json")
        assert done.returncode == 0, done.stderr
        assert [i["image"] for i in json.loads(done.stdout)["images"]] == [f"{LAB}/lab/app-a:1"]
        assert set(seeded.app_a.blob_digests) <= cache.stored_blobs()
        fetched = seeded.registry.blob_gets() - before
        assert sorted(fetched.elements()) == sorted(own[1:])

        lru = cache_factory(extra={"eviction": "lru"})
        refused = admin(lru, "GET", "predicted", params={"budget": "10MB"})
        assert refused.status_code == 405 and "predicts nothing" in refused.json()["errors"][0]["message"]
        bad = admin(cache, "GET", "predicted", params={"budget": "-1"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "NAME_INVALID"
