"""Prewarming: prewarm.yml and stack files, the scheduler loop on a clock the test moves, and
the real thing — a CNCF registry upstream, the cache under gunicorn (several workers), and
`faas-accel prewarm` processes talking to its admin API."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from faas_accel.prewarm.cron import Cron, crontab_weekdays, parse_cron
from faas_accel.prewarm.errors import PrewarmConfigError
from faas_accel.prewarm.loader import load_prewarm_file
from faas_accel.prewarm.plan import ImageResult, plan_totals, run_state
from faas_accel.prewarm.scheduler import Scheduler
from faas_accel.prewarm.spec import ImagesSource, Limits, PopularSource, StackSource, parse_prewarm
from faas_accel.prewarm.stack import stack_images, substitute
from faas_accel.testbed import oci
from faas_accel.testbed.cache import TOKEN, Cache
from faas_accel.testbed.procs import Proc, stop, wait_for
from faas_accel.testbed.tcpproxy import TcpProxy
from nic_cache.errors import NameUnknown
from nic_cache.prewarm.errors import NotLeader, SchedulerUnavailable
from nic_cache.prewarm.state import PrewarmState
from nic_cache.store import Store
from tests.conftest import Seeded
from tests.support.clock import FakeClock

LAB = "registry.lab"
PREWARM = [sys.executable, "-m", "faas_accel.prewarm.cli"]

EXAMPLE = """\
cache: {url: "http://198.18.1.1:5000", token: "${TOKEN:-secret}"}
schedules:
  - name: nightly-top
    cron: "0 3 * * *"          # or: interval: 15m
    source: {popular: {top: 20, window: 7d, min_pulls: 3}}
    pin: false
  - name: platform-base
    interval: 1h
    source: {images: ["docker.io/library/python:3.12-slim", "ghcr.io/openfaas/of-watchdog:0.10.7"]}
    pin: true                  # pinned images are never evicted
  - name: functions
    interval: 10m
    source: {stack: ./stack.yml}
    platforms: [linux/amd64]
limits: {concurrency: 2, bandwidth: 400Mbit}   # prewarm never starves live misses
"""


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[arg-type,misc]


# -- prewarm.yml --------------------------------------------------------------------------


class TestSpec:
    def test_the_issue_example(self) -> None:
        """The example from the issue parses into its schedules, sources and limits."""
        spec = parse_prewarm(EXAMPLE, {}, source="prewarm.yml", base_dir="/etc/faas")
        assert (spec.cache.url, spec.cache.token) == ("http://198.18.1.1:5000", "secret")
        assert spec.limits == Limits(concurrency=2, bandwidth=400_000_000)
        top, base, functions = spec.schedules
        assert top.cron == Cron(expr="0 3 * * *", minute="0", hour="3", day="*", month="*", day_of_week="*")
        assert top.source == PopularSource(top=20, window=7 * 86400, min_pulls=3, half_life=86400)
        assert (base.interval, base.pin) == (3600, True)
        assert base.source == ImagesSource(
            images=("docker.io/library/python:3.12-slim", "ghcr.io/openfaas/of-watchdog:0.10.7")
        )
        assert functions.source == StackSource(path="./stack.yml", resolved="/etc/faas/stack.yml")
        assert functions.platforms == ("linux/amd64",)
        assert base.at("pin") == "prewarm.yml:10" and top.at("cron") == "prewarm.yml:4"

    def test_variables_follow_the_cache_configs_rules(self) -> None:
        """${VAR:-default} takes the default when VAR is unset or empty, as nic-cache.yml does."""
        text = "cache: {url: 'http://${HOST:-c}:5000', token: '${TOKEN:-secret}'}\n"
        spec = parse_prewarm(text, {"TOKEN": ""})
        assert (spec.cache.url, spec.cache.token) == ("http://c:5000", "secret")

    def test_images_are_normalized_and_deduplicated(self) -> None:
        """Short Docker Hub names get their registry and library/; duplicates collapse."""
        spec = parse_prewarm(
            "schedules: [{name: a, interval: 1m,"
            " source: {images: [python:3.12, docker.io/library/python:3.12]}}]",
            {},
        )
        assert spec.schedules[0].source == ImagesSource(images=("docker.io/library/python:3.12",))

    @pytest.mark.parametrize(
        ("text", "error"),
        [
            ("cache: {url: http://c:5000}\nschedule: []\n",
             "p.yml:2: schedule: unknown key 'schedule'"),
            ("schedules:\n  - name: a\n    interval: 1m\n    source: {images: [x]}\n    pinned: true\n",
             "p.yml:5: schedules[0].pinned: unknown key 'pinned'"),
            ("schedules:\n  - name: a\n    interval: 15 minutes\n    source: {images: [x]}\n",
             "p.yml:3: schedules[0].interval: not a duration"),
            ("schedules:\n  - name: a\n    interval: 1m\n    cron: '* * * * *'\n    source: {images: [x]}\n",
             "p.yml:2: schedules[0]: schedule 'a' needs exactly one of cron or interval"),
            ("schedules:\n  - name: a\n    source: {images: [x]}\n",
             "p.yml:2: schedules[0]: schedule 'a' needs exactly one of cron or interval"),
            ("schedules:\n  - name: a\n    interval: 1m\n",
             "p.yml:2: schedules[0]: schedule 'a' needs a source"),
            ("schedules:\n  - name: a\n    cron: '0 3 * *'\n    source: {images: [x]}\n",
             "p.yml:3: schedules[0].cron: need 5 fields"),
            ("schedules:\n  - name: a\n    cron: '0 3 * * 8'\n    source: {images: [x]}\n",
             "p.yml:3: schedules[0].cron: bad weekday '8'"),
            ("schedules:\n  - name: a\n    interval: 1m\n    source:\n"
             "      images:\n        - ok:1\n        - Bad:Tag!\n",
             "p.yml:7: schedules[0].source.images[1]: invalid"),
            ("schedules:\n  - name: a\n    interval: 1m\n    source: {popular: {top: 0}}\n",
             "p.yml:4: schedules[0].source.popular.top: need an integer >= 1"),
            ("schedules:\n  - name: a\n    interval: 1m\n    source: {images: [x], stack: s.yml}\n",
             "p.yml:4: schedules[0].source: needs exactly one of popular, images, stack or predicted"),
            ("schedules:\n  - name: a\n    interval: 1m\n    source: {images: [x]}\n"
             "  - name: a\n    interval: 2m\n    source: {images: [y]}\n",
             "p.yml:5: schedules[1].name: duplicate schedule name 'a'"),
            ("timezone: Mars/Olympus\n", "p.yml:1: timezone: unknown time zone 'Mars/Olympus'"),
            ("limits: {concurrency: 2, bandwidth: fast}\n", "p.yml:1: limits.bandwidth: not a bit rate"),
            ("cache: {url: '${CACHE_URL}'}\n",
             "p.yml:1: cache.url: environment variable CACHE_URL is not set"),
            ("schedules:\n  - name: a\n    interval: [1m\n", "p.yml:4: invalid YAML"),
            ("schedules:\n  - name: a b\n", "p.yml:2: schedules[0].name: need a name"),
        ],
        ids=["unknown-top-key", "unknown-schedule-key", "bad-duration", "cron-and-interval", "no-trigger",
             "no-source", "cron-fields", "cron-weekday", "bad-image", "bad-top", "two-sources",
             "duplicate-name", "bad-timezone", "bad-bandwidth", "unset-variable", "yaml-syntax", "bad-name"],
    )  # fmt: skip
    def test_errors_name_file_line_and_reason(self, text: str, error: str) -> None:
        """Every mistake is refused with `file:line: key: reason`."""
        with pytest.raises(PrewarmConfigError) as exc:
            parse_prewarm(text, {}, source="p.yml")
        assert str(exc.value).startswith(error), str(exc.value)


class TestCron:
    @pytest.mark.parametrize(
        ("field", "names"),
        [("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"), ("*/2", "sun,tue,thu,sat"),
         ("MON,fri", "mon,fri"), ("5-7", "sun,fri,sat"), ("mon-fri/2", "mon,wed,fri"), ("0-7", "*")],
        ids=["any", "zero-is-sunday", "seven-is-sunday", "weekdays", "step", "names", "to-seven",
             "name-range-step", "whole-week"],
    )  # fmt: skip
    def test_crontab_weekdays_become_names(self, field: str, names: str) -> None:
        """Crontab weekday numbers (Sunday = 0 or 7) become names APScheduler reads the same way."""
        assert crontab_weekdays(field) == names

    def test_macros(self) -> None:
        """@daily and friends stand for their five fields."""
        assert parse_cron("@daily") == Cron(expr="@daily", minute="0", hour="0", day="*", month="*",
                                            day_of_week="*")  # fmt: skip
        assert parse_cron("@weekly").day_of_week == "sun"

    def test_day_of_month_and_weekday_together_are_refused(self) -> None:
        """cron ORs them and APScheduler ANDs them, so the ambiguous form is refused."""
        with pytest.raises(ValueError, match="not both"):
            parse_cron("0 3 1 * 1")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class TestLoader:
    def test_apscheduler_rejects_a_cron_at_its_line(self, tmp_path: Path) -> None:
        """A cron field out of range is found by APScheduler and reported at the cron's line."""
        p = write(
            tmp_path / "p.yml", "schedules:\n  - name: a\n    source: {images: [x]}\n    cron: '0 25 * * *'\n"
        )
        with pytest.raises(PrewarmConfigError, match=rf"^{re.escape(str(p))}:4: schedules\[0\]\.cron: .*25"):
            load_prewarm_file(str(p))

    def test_missing_stack_file_at_the_source_line(self, tmp_path: Path) -> None:
        """A stack file that does not exist is refused at start, at the source's line."""
        p = write(
            tmp_path / "p.yml", "schedules:\n  - name: f\n    interval: 1m\n    source: {stack: gone.yml}\n"
        )
        with pytest.raises(PrewarmConfigError) as exc:
            load_prewarm_file(str(p))
        assert str(exc.value) == (
            f"{p}:4: schedules[0].source.stack: cannot read {tmp_path}/gone.yml: No such file or directory"
        )

    def test_bad_stack_file_names_both_files(self, tmp_path: Path) -> None:
        """A stack file without an image is reported with both locations."""
        write(tmp_path / "stack.yml", "functions:\n  hello:\n    lang: python3\n")
        p = write(
            tmp_path / "p.yml", "schedules:\n  - name: f\n    interval: 1m\n    source: {stack: stack.yml}\n"
        )
        with pytest.raises(PrewarmConfigError) as exc:
            load_prewarm_file(str(p))
        assert (
            str(exc.value)
            == f"{p}:4: schedules[0].source.stack: {tmp_path}/stack.yml:2: functions.hello: no image"
        )

    def test_triggers_keep_timezone_and_crontab_weekdays(self, tmp_path: Path) -> None:
        """`0 3 * * *` in Europe/Paris follows daylight saving; `30 6 * * 1` is a Monday."""
        p = write(tmp_path / "p.yml", "timezone: Europe/Paris\nschedules:\n"
                  "  - {name: night, cron: '0 3 * * *', source: {images: [x]}}\n"
                  "  - {name: monday, cron: '30 6 * * 1', timezone: UTC,"
                  " source: {images: [x]}}\n")  # fmt: skip
        t = load_prewarm_file(str(p)).triggers
        at = datetime(2024, 3, 30, 12, tzinfo=UTC)
        assert t["night"].get_next_fire_time(None, at).timestamp() == utc(2024, 3, 31, 1)  # 03:00 CEST
        assert t["night"].get_next_fire_time(None, datetime(2024, 3, 29, 12, tzinfo=UTC)).timestamp() == utc(
            2024, 3, 30, 2
        )  # 03:00 CET
        saturday = datetime(2024, 6, 1, 12, tzinfo=UTC)
        assert t["monday"].get_next_fire_time(None, saturday).timestamp() == utc(2024, 6, 3, 6, 30)


class TestStack:
    @pytest.mark.parametrize(
        ("text", "out"),
        [("${R}/x", "reg/x"), ("${NOPE}/x", "/x"), ("${NOPE:-d}/x", "d/x"), ("${EMPTY:-d}", "d"),
         ("${EMPTY-d}", ""), ("${NOPE-d}", "d"), ("$R/x:$T", "reg/x:1"), ("${R:=z}", "reg")],
        ids=["braces", "unset-is-empty", "default", "empty-takes-colon-default", "empty-keeps-dash",
             "unset-takes-dash-default", "bare", "assign-form"],
    )  # fmt: skip
    def test_substitution_as_faas_cli_does(self, text: str, out: str) -> None:
        """Variables expand like faas-cli's envsubst: unset is empty, `:-` also covers empty."""
        assert substitute(text, {"R": "reg", "T": "1", "EMPTY": ""}) == out

    def test_images_of_every_function(self) -> None:
        """Each function's image, normalized, in file order, each once."""
        text = (
            "version: 1.0\nprovider: {name: openfaas}\nfunctions:\n"
            "  a: {lang: go, image: '${REG:-docker.io}/team/a:${TAG}'}\n"
            "  b: {image: python:3.12}\n  c: {image: 'registry.lab/team/a:7'}\n"
        )
        assert stack_images(text, {"REG": "registry.lab", "TAG": "7"}) == [
            "registry.lab/team/a:7", "docker.io/library/python:3.12",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("text", "error"),
        [("provider: {name: openfaas}\n", "s.yml:1: functions: need a mapping"),
         ("functions:\n  a: {lang: go}\n", "s.yml:2: functions.a: no image"),
         ("functions:\n  a:\n    image: 'UP/x'\n", "s.yml:3: functions.a.image: invalid")],
        ids=["no-functions", "no-image", "bad-image"],
    )  # fmt: skip
    def test_errors(self, text: str, error: str) -> None:
        """A stack file the scheduler cannot use says where."""
        with pytest.raises(PrewarmConfigError) as exc:
            stack_images(text, {}, source="s.yml")
        assert str(exc.value).startswith(error), str(exc.value)


class TestPlan:
    def test_image_result_from_progress(self) -> None:
        """Fetched = done minus what was already cached, in blobs and bytes."""
        doc = {"image": "r/x:1", "state": "done", "digest": "sha256:" + "a" * 64,
               "blobs_total": 4, "blobs_done": 4,
               "blobs_cached_before": 1, "bytes_total": 1000, "bytes_done": 1000, "bytes_cached_before": 300,
               "seconds": 1.5, "errors": []}  # fmt: skip
        r = ImageResult.from_progress(doc)
        assert (r.blobs, r.blobs_fetched, r.bytes, r.bytes_fetched, r.state) == (4, 3, 1000, 700, "done")

    @pytest.mark.parametrize(
        ("states", "source_error", "expected"),
        [((), None, "done"), (("done", "done"), None, "done"), (("done", "failed"), None, "partial"),
         (("done", "running"), None, "partial"), (("failed", "failed"), None, "failed"),
         ((), "boom", "failed")],
        ids=["empty", "all-done", "one-failed", "one-unfinished", "all-failed", "source-failed"],
    )  # fmt: skip
    def test_run_state(self, states: tuple[str, ...], source_error: str | None, expected: str) -> None:
        """A run is done, partial or failed by its images and its source."""
        assert (
            run_state([ImageResult(image=f"i{n}", state=s) for n, s in enumerate(states)], source_error)
            == expected
        )

    def test_plan_totals_count_shared_blobs_once(self) -> None:
        """Two images sharing a missing base layer need its bytes once."""
        base = {"digest": "sha256:" + "b" * 64, "size": 100, "cached": False}
        plans = [{"blobs": [base, {"digest": "sha256:" + "1" * 64, "size": 10, "cached": True}]},
                 {"blobs": [base, {"digest": "sha256:" + "2" * 64, "size": 20,
                                   "cached": False}]}]  # fmt: skip
        assert plan_totals(plans) == {
            "images": 2,
            "blobs": 3,
            "blobs_missing": 2,
            "bytes": 130,
            "bytes_missing": 120,
        }


# -- the scheduler loop on a clock the test moves -------------------------------------------


class StandInCache:
    """Answers the scheduler's heartbeats as the cache would; the loop's only other party."""

    url = "http://cache.test"

    def __init__(self) -> None:
        self.leader = True
        self.requests: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []

    def heartbeat(self, holder: str, ttl: float, registration: dict[str, Any]) -> dict[str, Any]:
        self.registrations.append(registration)
        reqs, self.requests = (self.requests, []) if self.leader else ([], self.requests)
        return {"leader": self.leader, "holder": holder if self.leader else "someone-else", "requests": reqs}

    def release(self, holder: str) -> None:
        pass


class Runs:
    """Records the runs the scheduler starts; `hold` keeps a run going until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None, int | None]] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, schedule: Any, api: Any, **kw: Any) -> dict[str, Any]:
        self.calls.append((schedule.name, kw["trigger"], kw["scheduled"], kw["request"]))
        self.hold.wait(10)
        return {"state": "done", "images_done": 0, "images_total": 0, "blobs_fetched": 0, "bytes_fetched": 0,
                "seconds": 0.0, "errors": []}  # fmt: skip


@pytest.fixture
def loop(tmp_path: Path) -> Callable[..., tuple[Scheduler, FakeClock, StandInCache, Runs]]:
    def make(text: str, now: float) -> tuple[Scheduler, FakeClock, StandInCache, Runs]:
        path = write(tmp_path / "prewarm.yml", text)
        clock, cache, runs = FakeClock(now), StandInCache(), Runs()
        sched = Scheduler(load_prewarm_file(str(path)), cache, config_path=str(path),  # type: ignore[arg-type]
                          holder="test", lease_ttl=1e9, clock=clock, run=runs)  # fmt: skip
        sched.heartbeat()
        return sched, clock, cache, runs

    return make


def tick(sched: Scheduler, clock: FakeClock, at: float) -> list[str]:
    clock.now = at
    started = sched.tick(at)
    sched.wait_runs(10)
    return started


class TestSchedulerLoop:
    def test_interval_runs_once_per_slot_and_coalesces_missed_ones(self, loop: Any) -> None:
        """An interval fires once per epoch-aligned slot; slots missed while away make one run."""
        sched, clock, _, runs = loop("schedules: [{name: a, interval: 10s, source: {images: [x]}}]", 1003.0)
        assert [tick(sched, clock, t) for t in (1005.0, 1009.999, 1010.0, 1010.5)] == [[], [], ["a"], []]
        assert tick(sched, clock, 1047.0) == ["a"]
        assert runs.calls == [("a", "schedule", 1010.0, None), ("a", "schedule", 1040.0, None)]
        assert sched.entries["a"].due is not None and sched.entries["a"].due.timestamp() == 1050.0

    def test_cron_in_a_timezone_across_daylight_saving(self, loop: Any) -> None:
        """`0 3 * * *` Europe/Paris runs at 02:00 UTC in winter and 01:00 UTC after the change."""
        sched, clock, _, runs = loop(
            "schedules: [{name: n, cron: '0 3 * * *', timezone: Europe/Paris, source: {images: [x]}}]",
            utc(2024, 3, 30, 0),
        )
        for t in (utc(2024, 3, 30, 1, 59), utc(2024, 3, 30, 2), utc(2024, 3, 31, 0, 59), utc(2024, 3, 31, 1)):
            tick(sched, clock, t)
        assert [c[2] for c in runs.calls] == [utc(2024, 3, 30, 2), utc(2024, 3, 31, 1)]

    def test_jitter_delays_the_run_but_not_its_slot(self, loop: Any) -> None:
        """With jitter the run starts up to that late; it is recorded under its slot."""
        sched, clock, _, runs = loop(
            "schedules: [{name: j, interval: 60s, jitter: 20s, source: {images: [x]}}]", 0.5
        )
        for n in range(1, 30):
            due = sched.entries["j"].due.timestamp()
            assert 60 * n <= due <= 60 * n + 20
            tick(sched, clock, due)
        assert [c[2] for c in runs.calls] == [60.0 * n for n in range(1, 30)]

    def test_standby_runs_nothing_but_keeps_time(self, loop: Any) -> None:
        """Without the lease, due slots pass unrun; after taking it over, no backlog runs."""
        sched, clock, cache, runs = loop("schedules: [{name: a, interval: 10s, source: {images: [x]}}]", 1.0)
        cache.leader = False
        sched.heartbeat()
        assert [tick(sched, clock, t) for t in (10.0, 20.0, 30.0)] == [[], [], []]
        cache.leader = True
        sched.heartbeat()
        assert tick(sched, clock, 35.0) == [] and tick(sched, clock, 40.0) == ["a"]
        assert runs.calls == [("a", "schedule", 40.0, None)]

    def test_a_run_still_going_makes_its_next_slot_skip(self, loop: Any) -> None:
        """A schedule never overlaps itself: the slot that comes while it runs is skipped."""
        sched, clock, _, runs = loop("schedules: [{name: a, interval: 10s, source: {images: [x]}}]", 1.0)
        runs.hold.clear()
        clock.now = 10.0
        assert sched.tick(10.0) == ["a"]
        wait_for(lambda: runs.calls, 5, "the run to start")
        assert sched.tick(20.0) == []
        runs.hold.set()
        sched.wait_runs(10)
        assert tick(sched, clock, 30.0) == ["a"]
        assert [c[2] for c in runs.calls] == [10.0, 30.0]

    def test_run_requests_from_the_cache(self, loop: Any) -> None:
        """A run asked for through the admin API comes with a heartbeat and runs at the next tick."""
        sched, clock, cache, runs = loop(
            "schedules: [{name: a, cron: '0 3 * * *', source: {images: [x]}}]", 1.0
        )
        cache.requests = [{"id": 7, "name": "a"}, {"id": 8, "name": "gone"}]
        sched.heartbeat()
        assert tick(sched, clock, 2.0) == ["a"]
        assert runs.calls == [("a", "request", None, 7)]

    def test_reload_keeps_the_old_schedules_when_the_file_is_bad(self, loop: Any, tmp_path: Path) -> None:
        """A bad file on reload changes nothing; a good one replaces the schedules, keeping the
        next run of those whose trigger did not change."""
        sched, clock, cache, _ = loop(
            "schedules:\n  - {name: a, interval: 10s, source: {images: [x]}}\n"
            "  - {name: b, interval: 1h, source: {images: [x]}}\n", 1.0,
        )  # fmt: skip
        before = dict(sched.entries)
        write(tmp_path / "prewarm.yml", "schedules:\n  - {name: a, interval: 10 s, source: {images: [x]}}\n")
        assert sched.reload() is False
        assert sched.entries == before
        write(tmp_path / "prewarm.yml", "schedules:\n  - {name: b, interval: 1h, source: {images: [x]}}\n"
              "  - {name: c, interval: 5s, source: {images: [x]}}\n")  # fmt: skip
        clock.now = 2.0
        assert sched.reload() is True
        assert set(sched.entries) == {"b", "c"}
        assert sched.entries["b"] is before["b"]
        assert sched.entries["c"].due is not None and sched.entries["c"].due.timestamp() == 5.0
        sched.heartbeat()
        assert [s["name"] for s in cache.registrations[-1]["schedules"]] == ["b", "c"]


# -- the cache's prewarm state (SQLite) on a clock the test moves ------------------------------


def sha(data: bytes) -> str:
    return oci.sha256_digest(data)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[PrewarmState, Store, FakeClock]]:
    clock = FakeClock(1000.0)
    store = Store(str(tmp_path / "data"), clock=clock)
    yield PrewarmState(store, clock=clock), store, clock
    store.close()


def registration(*schedules: tuple[str, bool]) -> dict[str, Any]:
    return {"limits": {"concurrency": 1, "bandwidth": 8000}, "schedules": [
        {"name": n, "pin": pin} for n, pin in schedules]}  # fmt: skip


class TestState:
    def test_lease_goes_to_one_holder_and_passes_on_expiry(self, state: Any) -> None:
        """One holder at a time; a standby takes over once the lease expires, re-queueing the
        requests the old holder claimed and marking its unfinished runs abandoned."""
        st, _, clock = state
        assert st.heartbeat("a", 10, registration(("s", False)))["leader"] is True
        assert st.heartbeat("b", 10, registration(("other", False))) == {
            "leader": False, "holder": "a", "requests": [],
        }  # fmt: skip
        assert [s["name"] for s in st.snapshot()["schedules"]] == ["s"]
        req = st.request_run("s")
        assert [r["id"] for r in st.heartbeat("a", 10, None)["requests"]] == [req]
        run = st.start_run("s", holder="a", trigger="schedule", scheduled=990.0)
        manual = st.start_run("s", holder="cli", trigger="manual")
        with pytest.raises(NotLeader):
            st.start_run("s", holder="b", trigger="schedule", scheduled=1000.0)
        clock.now += 11
        taken = st.heartbeat("b", 10, registration(("s", False)))
        assert taken["leader"] is True and [r["id"] for r in taken["requests"]] == [req]
        states = {r["id"]: r["state"] for r in st.runs("s")}
        assert states == {run: "abandoned", manual: "running"}
        assert st.limits() == {"concurrency": 1, "bandwidth": 8000}

    def test_a_slot_runs_once(self, state: Any) -> None:
        """The cache refuses a second run of the same schedule for the same slot."""
        st, _, _ = state
        st.heartbeat("a", 10, registration(("s", False)))
        st.start_run("s", holder="a", trigger="schedule", scheduled=960.0)
        with pytest.raises(NotLeader, match="already ran"):
            st.start_run("s", holder="a", trigger="schedule", scheduled=960.0)

    def test_run_requests_need_a_known_schedule_and_a_scheduler(self, state: Any) -> None:
        """Unknown schedule: NameUnknown; no live lease: SchedulerUnavailable; a request not
        yet started is reused rather than queued twice."""
        st, _, _ = state
        with pytest.raises(NameUnknown):
            st.request_run("s")
        st.heartbeat("a", 10, registration(("s", False)))
        assert st.request_run("s") == st.request_run("s")
        assert st.release("a") is True
        with pytest.raises(SchedulerUnavailable):
            st.request_run("s")

    def test_pins_follow_the_schedules_that_hold_them(self, state: Any) -> None:
        """Blobs of a pinned image are pinned; dropping the schedule (or its pin) unpins them."""
        st, store, _ = state
        layer, config = b"layer" * 100, b'{"config": 1}'
        for data in (layer, config):
            store.put_bytes(sha(data), data, None)
        manifest = json.dumps({"mediaType": oci.OCI_MANIFEST, "config": {"digest": sha(config), "size": 13},
                               "layers": [{"digest": sha(layer), "size": len(layer)}]}).encode()  # fmt: skip
        store.put_bytes(sha(manifest), manifest, oci.OCI_MANIFEST)
        store.link_manifest(sha(manifest), [sha(config), sha(layer)])
        st.heartbeat("a", 10, registration(("base", True)))
        st.record_pin("schedule:base", "registry.lab/x:1", sha(manifest))
        assert st.reconcile_pins() == (3, 0)
        assert store.pinned() == {sha(manifest), sha(config), sha(layer)}
        st.heartbeat("a", 10, registration(("base", False)))
        assert store.pinned() == set()


# -- the real thing: a CNCF registry upstream, the cache under gunicorn, prewarm processes ----


@pytest.fixture
def schedulers() -> Iterator[Callable[..., Proc]]:
    """`start(config, log, *args) -> Proc` runs `faas-accel prewarm run`; all stopped after."""
    made: list[Proc] = []

    def start(config: Path, log: Path, *args: str) -> Proc:
        proc = Proc([*PREWARM, "run", "--config", str(config), *args], log)
        made.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in made:
            stop(proc)


def prewarm_yml(path: Path, cache: Cache, body: str) -> Path:
    """A prewarm file naming `cache`, with `body` (schedules, limits) after it."""
    return write(path, f"cache: {{url: '{cache.url}', token: {TOKEN}}}\n{body}")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PREWARM, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip


def admin(cache: Cache, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{cache.url}/api/v1/{path}", headers=cache.auth, timeout=60, **kw)


def runs(cache: Cache, name: str) -> list[dict[str, Any]]:
    """The schedule's runs, oldest first."""
    answer = admin(cache, "GET", "prewarm/runs", params={"name": name, "limit": 1000})
    answer.raise_for_status()
    return list(reversed(answer.json()["runs"]))


def publish_random(seeded: Seeded, name: str, sizes: list[int], seed: int) -> oci.Image:
    """Push `lab/<name>:1`: one random layer per size (the same bytes for the same seed)."""
    image = oci.image([oci.random_layer(size, seed=seed + i) for i, size in enumerate(sizes)])
    oci.publish(image, f"{seeded.registry.host}/lab/{name}:1")
    return image


def pull(cache: Cache, name: str, upstream: str = LAB) -> None:
    """Pull `lab/<name>:1` through the cache as a runtime would, checking every digest."""
    base = f"{cache.url}/v2/{upstream}/lab/{name}"
    manifest = requests.get(f"{base}/manifests/1", headers={"Accept": oci.OCI_MANIFEST}, timeout=30)
    assert manifest.status_code == 200, manifest.text
    doc = manifest.json()
    for d in [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]:
        blob = requests.get(f"{base}/blobs/{d}", timeout=60)
        assert blob.status_code == 200 and oci.sha256_digest(blob.content) == d


def settled(value: Callable[[], int], *, quiet: float, timeout: float) -> int:
    """`value()` once it has not changed for `quiet` seconds; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"still changing after {timeout:.1f}s (last {last})")
        time.sleep(0.05)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def part_bytes(cache: Cache, digest: str) -> int:
    """Bytes in the fill's temp file of `digest` (0 when there is none)."""
    parts = list((cache.data_dir / "tmp").glob(f"{digest[7:]}.*.part"))
    return sum(p.stat().st_size for p in parts if p.exists())


pytestmark_integration = pytest.mark.integration


@pytestmark_integration
class TestPopularAPI:
    def test_ranks_pulls_and_deploys_with_size_and_cached(self, cache: Cache, seeded: Seeded) -> None:
        """Manifest pulls by tag and deploy events rank images; counts, VMs, size and cached
        come with each; unconfigured registries are left out; limit and min_pulls apply."""
        for _ in range(3):
            assert requests.get(f"{cache.url}/v2/{LAB}/lab/hello/manifests/1", timeout=10).status_code == 200
        assert requests.head(f"{cache.url}/v2/lab/app-a/manifests/1", timeout=10).status_code == 200
        for vm in ("vm1", "vm2"):
            ok = admin(
                cache,
                "POST",
                "events/deploy",
                json={"image": f"{LAB}/lab/app-b:1", "function": "b", "vm": vm},
            )
            assert ok.status_code == 200
        admin(cache, "POST", "events/deploy", json={"image": "ghcr.io/elsewhere/x:1", "vm": "vm1"})
        top = admin(cache, "GET", "popular", params={"limit": 10}).json()["images"]
        assert [(i["image"], i["pulls"], i["deploys"], i["vms"]) for i in top] == [
            (f"{LAB}/lab/hello:1", 3, 0, 1), (f"{LAB}/lab/app-b:1", 0, 2, 2), (f"{LAB}/lab/app-a:1", 1, 0, 1),
        ]  # fmt: skip
        hello = top[0]
        assert hello["size"] == seeded.hello.size + sum(
            b.size for b in (seeded.hello.config, *seeded.hello.layers)
        )
        assert hello["cached"] is False and top[1]["size"] is None
        assert 2.99 < hello["score"] <= 3.0
        assert (
            admin(cache, "POST", "prefetch", json={"image": f"{LAB}/lab/hello:1"}).json()["state"] == "done"
        )
        again = admin(cache, "GET", "popular", params={"limit": 1}).json()["images"]
        assert [(i["image"], i["cached"]) for i in again] == [(f"{LAB}/lab/hello:1", True)]
        picky = admin(cache, "GET", "popular", params={"min_pulls": 2, "window": "1h"}).json()["images"]
        assert [i["image"] for i in picky] == [f"{LAB}/lab/hello:1", f"{LAB}/lab/app-b:1"]
        bad = admin(cache, "GET", "popular", params={"window": "soon"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "NAME_INVALID"


@pytestmark_integration
class TestRuns:
    def test_once_fills_records_and_survives_a_bad_image(
        self, cache: Cache, seeded: Seeded, tmp_path: Path
    ) -> None:
        """A run fetches every blob once, records images, bytes, time and errors; a missing
        image fails alone; the next run fetches nothing."""
        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: base\n    interval: 1h\n"
                        f"    source: {{images: [{LAB}/lab/multilayer:1, {LAB}/lab/nope:1,"
                        f" {LAB}/lab/app-a:1]}}\n")  # fmt: skip
        before = seeded.registry.blob_gets()
        first = cli("once", "base", "--config", str(p))
        assert first.returncode == 1, first.stderr
        assert f"{LAB}/lab/nope:1: manifest lab/nope:1 unknown" in first.stderr
        wanted = [*seeded.multilayer.blob_digests, *seeded.app_a.blob_digests]
        assert set(wanted) <= cache.stored_blobs()
        fetched = seeded.registry.blob_gets() - before
        assert {d: fetched[d] for d in wanted} == dict.fromkeys(wanted, 1)
        (run,) = runs(cache, "base")
        result = run["result"]
        assert (run["trigger"], run["state"], result["images_done"], result["images_total"]) == (
            "manual",
            "partial",
            2,
            3,
        )
        sizes = {
            b.digest: b.size for img in (seeded.multilayer, seeded.app_a) for b in (img.config, *img.layers)
        }
        assert result["bytes_fetched"] == sum(sizes.values()) and result["blobs_fetched"] == len(sizes)
        assert result["seconds"] >= 0 and result["errors"] == [
            f"{LAB}/lab/nope:1: manifest lab/nope:1 unknown to upstream {LAB}"
        ]
        second = json.loads(cli("once", "base", "--config", str(p), "--json").stdout)
        assert (second["blobs_fetched"], second["bytes_fetched"], second["state"]) == (0, 0, "partial")
        assert seeded.registry.blob_gets() - before == fetched

    def test_stack_source_with_variables(self, cache: Cache, seeded: Seeded, tmp_path: Path) -> None:
        """Every image of a stack file, `${VAR}` substituted as faas-cli does, is prewarmed."""
        write(tmp_path / "stack.yml", "version: 1.0\nprovider: {name: openfaas}\nfunctions:\n"
              "  b: {lang: python3-http, handler: ./b, image: '${LAB_REGISTRY}/lab/app-b:${APP_TAG:-1}'}\n"
              f"  h: {{image: {LAB}/lab/hello:1}}\n")  # fmt: skip
        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: functions\n    interval: 10m\n"
                        "    source: {stack: ./stack.yml}\n    platforms: [linux/amd64]\n")  # fmt: skip
        done = cli("once", "functions", "--config", str(p), "--json", env={"LAB_REGISTRY": LAB})
        assert done.returncode == 0, done.stderr
        assert [i["image"] for i in json.loads(done.stdout)["images"]] == [
            f"{LAB}/lab/app-b:1",
            f"{LAB}/lab/hello:1",
        ]
        assert {*seeded.app_b.blob_digests, *seeded.hello.blob_digests} <= cache.stored_blobs()

    def test_popular_source_prewarms_the_top(self, cache: Cache, seeded: Seeded, tmp_path: Path) -> None:
        """A `popular` schedule fills the top K images of the cache's ranking, no more."""
        for name, times in (("app-a", 3), ("hello", 1)):
            for _ in range(times):
                requests.get(f"{cache.url}/v2/{LAB}/lab/{name}/manifests/1", timeout=10).raise_for_status()
        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: top\n    cron: '0 3 * * *'\n"
                        "    source: {popular: {top: 1, window: 1d, min_pulls: 2}}\n")  # fmt: skip
        assert cli("once", "top", "--config", str(p)).returncode == 0
        stored = cache.stored_blobs()
        assert set(seeded.app_a.blob_digests) <= stored
        assert seeded.hello.layers[-1].digest not in stored

    def test_plan_is_a_dry_run(self, cache: Cache, seeded: Seeded, tmp_path: Path) -> None:
        """`prewarm plan` lists images, missing blobs and bytes, and fetches no blob."""
        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: base\n    interval: 1h\n"
                        f"    source: {{images: [{LAB}/lab/multilayer:1, {LAB}/lab/hello:1]}}\n")  # fmt: skip
        before = seeded.registry.blob_gets()
        out = cli("plan", "--config", str(p), "--json")
        assert out.returncode == 0, out.stderr
        plan = json.loads(out.stdout)
        digests = {*seeded.multilayer.blob_digests, *seeded.hello.blob_digests}
        sizes = {
            b.digest: b.size for img in (seeded.multilayer, seeded.hello) for b in (img.config, *img.layers)
        }
        assert plan["totals"] == {"images": 2, "blobs": len(digests), "blobs_missing": len(digests),
                                  "bytes": sum(sizes.values()),
                                  "bytes_missing": sum(sizes.values())}  # fmt: skip
        assert sum((seeded.registry.blob_gets() - before).values()) == 0
        assert not digests & cache.stored_blobs()
        text = cli("plan", "--config", str(p)).stdout
        assert f"{LAB}/lab/multilayer:1: 5/5 blobs missing" in text and "total: " in text


@pytestmark_integration
class TestPinning:
    def test_pinned_image_survives_capacity_pressure_until_its_schedule_drops_it(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], tmp_path: Path
    ) -> None:
        """Live pulls past the capacity evict unpinned images, never the pinned one; once the
        schedule no longer lists it, it is unpinned and evicted like any other."""
        pinned = publish_random(seeded, "pin-base", [1_000_000], seed=7100)
        others = [publish_random(seeded, f"pin-x{i}", [1_500_000], seed=7200 + i) for i in range(4)]
        # which unpinned images go is LRU's order (the default policy is size-aware)
        cache = cache_factory(extra={"capacity": "6MB", "low_watermark": 0.9, "eviction": "lru"})
        p = prewarm_yml(tmp_path / "p.yml", cache,
                        "schedules:\n  - name: base\n    interval: 1h\n    pin: true\n"
                        f"    source: {{images: [{LAB}/lab/pin-base:1]}}\n")  # fmt: skip
        assert cli("once", "base", "--config", str(p)).returncode == 0
        for i in range(4):
            pull(cache, f"pin-x{i}")
            cache.wait_idle()
        stored = cache.stored_blobs()
        assert set(pinned.blob_digests) <= stored
        assert others[0].layers[0].digest not in stored and others[1].layers[0].digest not in stored
        listed = {i["image"]: i["pinned"] for i in admin(cache, "GET", "images").json()["images"]}
        assert listed[f"{LAB}/lab/pin-base:1"] is True and listed[f"{LAB}/lab/pin-x3:1"] is False
        prewarm_yml(p, cache, "schedules:\n  - name: base\n    interval: 1h\n    pin: true\n"
                    f"    source: {{images: [{LAB}/lab/pin-x3:1]}}\n")  # fmt: skip
        assert cli("once", "base", "--config", str(p)).returncode == 0
        for i in range(3):
            pull(cache, f"pin-x{i}")
            cache.wait_idle()
        stored = cache.stored_blobs()
        assert pinned.layers[0].digest not in stored
        assert set(others[3].blob_digests) <= stored

    def test_pins_may_take_half_the_capacity_at_most(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], tmp_path: Path
    ) -> None:
        """An image that would take pinned content past half the capacity below the low
        watermark is filled but not pinned, and the run says so."""
        big = publish_random(seeded, "pin-big", [2_000_000], seed=7150)
        cache = cache_factory(extra={"capacity": "4MB", "low_watermark": 0.9})
        p = prewarm_yml(tmp_path / "p.yml", cache,
                        "schedules:\n  - name: base\n    interval: 1h\n    pin: true\n"
                        f"    source: {{images: [{LAB}/lab/pin-big:1]}}\n")  # fmt: skip
        out = cli("once", "base", "--config", str(p), "--json")
        assert out.returncode == 1
        result = json.loads(out.stdout)
        assert result["state"] == "failed"
        assert result["errors"][0].startswith(f"{LAB}/lab/pin-big:1: not pinned: pinned content would take")
        assert set(big.blob_digests) <= cache.stored_blobs()
        listed = {i["image"]: i["pinned"] for i in admin(cache, "GET", "images").json()["images"]}
        assert listed == {f"{LAB}/lab/pin-big:1": False}


@pytestmark_integration
class TestLiveFirst:
    def test_prewarm_and_a_live_pull_of_the_same_image_fetch_each_blob_once(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], tmp_path: Path
    ) -> None:
        """A prewarm racing skopeo for the same image: both succeed, each blob crosses once."""
        slow = TcpProxy(("127.0.0.1", seeded.registry.port), rate=3_000_000)
        try:
            cache = cache_factory({LAB: slow.url})
            image = publish_random(seeded, "race", [2_000_000, 2_500_000, 1_500_000], seed=7300)
            p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: race\n    interval: 1h\n"
                            f"    source: {{images: [{LAB}/lab/race:1]}}\n")  # fmt: skip
            before = seeded.registry.blob_gets()
            with subprocess.Popen([*PREWARM, "once", "race", "--config", str(p)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as prewarm:  # fmt: skip
                try:
                    wait_for(
                        lambda: any(part_bytes(cache, d) for d in image.layer_digests), 30, "a prewarm fill"
                    )
                    live = subprocess.run(
                        ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                         f"docker://{cache.host}/{LAB}/lab/race:1", f"dir:{tmp_path / 'out'}"],
                        capture_output=True, text=True, timeout=120,
                    )  # fmt: skip
                    assert live.returncode == 0, live.stderr
                    _, err = prewarm.communicate(timeout=120)
                    assert prewarm.returncode == 0, err
                finally:
                    if prewarm.poll() is None:
                        stop(prewarm)  # type: ignore[arg-type]
            for d in image.blob_digests:
                assert oci.sha256_digest((tmp_path / "out" / d[7:]).read_bytes()) == d
            fetched = seeded.registry.blob_gets() - before
            assert {d: fetched[d] for d in image.blob_digests} == dict.fromkeys(image.blob_digests, 1)
            assert runs(cache, "race")[-1]["state"] == "done"
        finally:
            slow.close()

    def test_a_live_reader_lifts_the_bandwidth_limit_of_the_fill_it_joins(
        self, seeded: Seeded, cache: Cache
    ) -> None:
        """A background fill held to 1 MB/s; a client asking for the same blob gets it at full
        speed, from the same single upstream fetch."""
        image = publish_random(seeded, "slowfill", [8_000_000], seed=7400)
        layer = image.layers[0]
        before = seeded.registry.blob_gets(layer.digest)
        started = admin(cache, "POST", "prefetch", json={
            "image": f"{LAB}/lab/slowfill:1", "priority": "background", "wait": 0,
            "limits": {"concurrency": 1, "bandwidth": 8_000_000},
        })  # fmt: skip
        assert started.status_code == 202, started.text
        wait_for(lambda: part_bytes(cache, layer.digest) >= 1 << 20, 30, "the background fill to start")
        t0, s0 = time.monotonic(), part_bytes(cache, layer.digest)
        def progress() -> int:  # bytes filled so far (all of them once it is stored)
            return layer.size if layer.digest in cache.stored_blobs() else part_bytes(cache, layer.digest)

        # the time the fill takes for 2 more MB (or to finish, were it not held back)
        wait_for(lambda: progress() >= min(s0 + 2_000_000, layer.size), 30, "2 MB more of the fill")
        done = progress()
        rate = (done - s0) / (time.monotonic() - t0)
        assert rate < 1_600_000, f"background fill ran at {rate:.0f} B/s, above its 1 MB/s budget"
        t1 = time.monotonic()
        resp = requests.get(f"{cache.url}/v2/{LAB}/lab/slowfill/blobs/{layer.digest}", timeout=60)
        took = time.monotonic() - t1
        assert resp.status_code == 200 and oci.sha256_digest(resp.content) == layer.digest
        assert took < 2.0, f"the live reader waited {took:.1f} s for ~5 MB: it was throttled"
        assert seeded.registry.blob_gets(layer.digest)[layer.digest] - before[layer.digest] == 1

    def test_background_fills_pause_while_a_live_miss_streams(
        self, seeded: Seeded, cache_factory: Callable[..., Cache]
    ) -> None:
        """While a client streams a miss, a background fill of another blob reads nothing;
        it finishes once the client is served."""
        slow = TcpProxy(("127.0.0.1", seeded.registry.port), rate=1_500_000)
        try:
            cache = cache_factory({LAB: seeded.registry.url, "slow.lab": slow.url})
            background = publish_random(seeded, "bg", [6_000_000], seed=7500).layers[0]
            live = publish_random(seeded, "live", [4_000_000], seed=7600).layers[0]
            admin(cache, "POST", "prefetch", json={
                "image": f"{LAB}/lab/bg:1", "priority": "background", "wait": 0,
                "limits": {"concurrency": 1, "bandwidth": 16_000_000},
            }).raise_for_status()  # fmt: skip
            wait_for(lambda: part_bytes(cache, background.digest) >= 1 << 20, 30, "the background fill")
            got: list[requests.Response] = []
            reader = threading.Thread(target=lambda: got.append(requests.get(
                f"{cache.url}/v2/slow.lab/lab/live/blobs/{live.digest}", timeout=60)))  # fmt: skip
            reader.start()
            wait_for(lambda: part_bytes(cache, live.digest) > 0, 10, "the live miss to stream")
            # the chunk it was reading lands, then it reads no more (until pacing.KEEPALIVE)
            paused_at = settled(lambda: part_bytes(cache, background.digest), quiet=0.3, timeout=5)
            live_at = part_bytes(cache, live.digest)
            wait_for(lambda: part_bytes(cache, live.digest) >= live_at + 1_000_000, 10,
                     "another MB of the live miss")  # fmt: skip
            assert part_bytes(cache, background.digest) == paused_at
            reader.join(60)
            assert got and got[0].status_code == 200 and oci.sha256_digest(got[0].content) == live.digest
            wait_for(lambda: background.digest in cache.stored_blobs(), 30, "the background fill to finish")
        finally:
            slow.close()

    def test_background_fills_share_the_concurrency_budget(self, seeded: Seeded, cache: Cache) -> None:
        """Three background prefetches at once, in whichever workers: one blob fill at a time."""
        images = [publish_random(seeded, f"conc{i}", [1_500_000], seed=7700 + i) for i in range(3)]
        seen: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                # a fill's pointer, not its part file: manifests have part files too (fsynced)
                seen.append(len(list((cache.data_dir / "tmp").glob("*.fill"))))
                done.wait(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        body = {"priority": "background", "wait": 60, "limits": {"concurrency": 1, "bandwidth": 24_000_000}}
        try:
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(
                    lambda i: admin(
                        cache, "POST", "prefetch", json={**body, "image": f"{LAB}/lab/conc{i}:1"}
                    ),
                    range(3),
                ))  # fmt: skip
        finally:
            done.set()
            sampler.join()
        assert [a.json()["state"] for a in answers] == ["done"] * 3
        assert max(seen) == 1
        assert {d for img in images for d in img.blob_digests} <= cache.stored_blobs()


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[1])


@pytestmark_integration
class TestScheduler:
    def test_one_process_runs_each_trigger_once(
        self, cache_factory: Callable[..., Cache], schedulers: Callable[..., Proc], tmp_path: Path
    ) -> None:
        """Three schedulers on one cache (three gunicorn workers): one holds the lease and runs
        every 1 s slot exactly once; killed, a standby takes over; no slot ever runs twice."""
        cache = cache_factory(workers=3)
        p = prewarm_yml(tmp_path / "p.yml", cache, "schedules:\n  - name: tick\n    interval: 1s\n"
                        f"    source: {{images: [{LAB}/lab/hello:1]}}\n")  # fmt: skip
        procs = [schedulers(p, tmp_path / f"s{i}.log", "--lease-ttl", "3") for i in range(3)]
        wait_for(lambda: len(runs(cache, "tick")) >= 6, 30, "six runs")
        leader = runs(cache, "tick")[-1]["holder"]
        victim = next(proc for proc in procs if proc.pid == holder_pid(leader))
        os.kill(victim.pid, signal.SIGKILL)
        victim.popen.wait(10)
        wait_for(
            lambda: sum(r["holder"] != leader for r in runs(cache, "tick")) >= 4, 30, "four runs by a standby"
        )
        for proc in procs:
            stop(proc)
        log = [r for r in runs(cache, "tick") if r["trigger"] == "schedule"]
        slots = [r["scheduled"] for r in log]
        assert len(set(slots)) == len(slots) and slots == sorted(slots), "a slot ran twice"
        holders = [r["holder"] for r in log]
        first, second = holders[0], holders[-1]
        assert first == leader and second != leader
        assert holders == [first] * holders.count(first) + [second] * holders.count(second)
        for who in (first, second):
            own = [r["scheduled"] for r in log if r["holder"] == who]
            assert all(b - a == 1.0 for a, b in itertools.pairwise(own)), (
                f"{who} missed a trigger: {own}"
            )
        handover = slots[holders.count(first)] - slots[holders.count(first) - 1]
        assert handover <= 3 + 3, f"the standby took {handover} s to take over"
        assert {r["state"] for r in log} <= {"done", "abandoned"}

    def test_status_run_request_and_no_scheduler(
        self, cache: Cache, seeded: Seeded, schedulers: Callable[..., Proc], tmp_path: Path
    ) -> None:
        """GET /prewarm shows schedules, next run and last result; POST .../run runs one now
        through the scheduler; unknown names get 404 and a cache without scheduler 503."""
        assert admin(cache, "POST", "prewarm/base/run").status_code == 404
        p = prewarm_yml(tmp_path / "p.yml", cache,
                        "limits: {concurrency: 3, bandwidth: 200Mbit}\nschedules:\n"
                        "  - {name: base, interval: 1h, pin: true,"
                        f" source: {{images: [{LAB}/lab/app-b:1]}}}}\n"
                        "  - {name: top, cron: '0 3 * * *', timezone: UTC,"
                        " source: {popular: {top: 5}}}\n")  # fmt: skip
        proc = schedulers(p, tmp_path / "s.log", "--lease-ttl", "3")
        wait_for(lambda: admin(cache, "GET", "prewarm").json()["schedules"], 20, "the scheduler to register")
        status = admin(cache, "GET", "prewarm").json()
        assert status["scheduler"]["alive"] and holder_pid(status["scheduler"]["holder"]) == proc.pid
        assert status["limits"] == {"concurrency": 3, "bandwidth": 200_000_000}
        base, top = status["schedules"]
        now = time.time()
        assert (base["trigger"], base["pin"], base["last_run"]) == ("interval 1h", True, None)
        assert base["next_run"] % 3600 == 0 and 0 < base["next_run"] - now <= 3600
        assert top["trigger"] == "cron 0 3 * * * (UTC)" and top["next_run"] % 86400 == 3 * 3600
        answer = admin(cache, "POST", "prewarm/base/run", json={"wait": 30})
        assert answer.status_code == 200, answer.text
        run = answer.json()["run"]
        assert (run["trigger"], run["state"], run["result"]["images_done"]) == ("request", "done", 1)
        assert set(seeded.app_b.blob_digests) <= cache.stored_blobs()
        assert admin(cache, "GET", "prewarm").json()["schedules"][0]["last_run"]["id"] == run["id"]
        assert admin(cache, "POST", "prewarm/nope/run").status_code == 404
        stop(proc)
        gone = admin(cache, "POST", "prewarm/base/run")
        assert gone.status_code == 503 and gone.json()["errors"][0]["code"] == "UNAVAILABLE"

    def test_sighup_reload_keeps_the_old_schedules_when_the_file_is_bad(
        self, cache: Cache, schedulers: Callable[..., Proc], tmp_path: Path
    ) -> None:
        """A bad file on SIGHUP is refused with file:line and the old schedules stay; a good
        one replaces them."""
        p = prewarm_yml(
            tmp_path / "p.yml", cache, "schedules:\n  - {name: a, interval: 1h, source: {images: [x]}}\n"
        )
        log = tmp_path / "s.log"
        proc = schedulers(p, log)

        def names() -> list[str]:
            return [s["name"] for s in admin(cache, "GET", "prewarm").json()["schedules"]]

        def seen() -> float:
            return float(admin(cache, "GET", "prewarm").json()["scheduler"]["last_seen"])

        wait_for(lambda: names() == ["a"], 20, "schedule a")
        prewarm_yml(
            p, cache, "schedules:\n  - {name: b, interval: 1h, source: {images: [x]}}\n  - {name: c}\n"
        )
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 20, "the reload to be refused")
        assert f"{p}:4: schedules[1]: schedule 'c' needs exactly one of cron or interval" in log.read_text()
        first = seen()  # two heartbeats later, the cache still shows the old schedules
        wait_for(lambda: seen() > first, 20, "a heartbeat")
        second = seen()
        wait_for(lambda: seen() > second, 20, "another heartbeat")
        assert names() == ["a"] and proc.running()
        prewarm_yml(p, cache, "schedules:\n  - {name: b, interval: 1h, source: {images: [x]}}\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: names() == ["b"], 20, "schedule b")

    def test_a_bad_file_is_refused_at_start(self, tmp_path: Path) -> None:
        """`prewarm run` and `prewarm check` refuse a bad file with file:line and the reason."""
        p = write(tmp_path / "p.yml", "cache: {url: 'http://127.0.0.1:9'}\nschedules:\n"
                  "  - name: a\n    cron: '61 * * * *'\n    source: {images: [x]}\n")  # fmt: skip
        for command in ("run", "check"):
            out = cli(command, "--config", str(p))
            assert out.returncode == 1
            assert f"Error: {p}:4: schedules[0].cron: '61 * * * *'" in out.stderr, out.stderr
