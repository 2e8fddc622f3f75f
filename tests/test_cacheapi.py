"""The admin-API client against a stand-in cache on loopback: every way an answer can go wrong
maps to one error of its tree, and answers become typed records."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from faas_accel.cacheapi import (
    BadAnswer,
    CacheAPI,
    CacheAPIError,
    CachedImage,
    CacheUnreachable,
    DeployEvent,
    NotFound,
    PopularImage,
    Refused,
    Unauthorized,
)
from tests.support.jsonserver import serving

D1 = "sha256:" + "1" * 64


@dataclass
class StandIn:
    """What the stand-in answers (status, raw body) and what it was asked."""

    url: str = ""
    status: int = 200
    body: bytes = b"{}"
    asked: list[tuple[str, str, Any]] = field(default_factory=list)


def oci_error(code: str, message: str, detail: Any = None) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()


@pytest.fixture
def cache() -> Iterator[StandIn]:
    state = StandIn()

    def answer(method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        state.asked.append((method, path, json.loads(body) if body else None))
        return state.status, state.body

    with serving(answer) as state.url:
        yield state


@pytest.fixture
def api(cache: StandIn) -> Iterator[CacheAPI]:
    with CacheAPI(cache.url, "t0k") as client:
        yield client


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "error", "text"),
        [
            (200, b"<html>", BadAnswer, "not JSON"),
            (200, b"[1, 2]", BadAnswer, "expected a JSON object, got list"),
            (401, oci_error("UNAUTHORIZED", "no"), Unauthorized, "NIC_CACHE_ADMIN_TOKEN"),
            (404, oci_error("MANIFEST_UNKNOWN", "manifest x unknown"), NotFound, "HTTP 404 MANIFEST_UNKNOWN"),
            (409, oci_error("NOT_LEADER", "held by b"), Refused, "HTTP 409 NOT_LEADER: held by b"),
            (500, b"oops", Refused, "HTTP 500: oops"),
        ],
        ids=["not-json", "not-an-object", "unauthorized", "not-found", "refused", "error-not-json"],
    )
    def test_each_bad_answer_is_one_error_of_the_tree(
        self, cache: StandIn, api: CacheAPI, status: int, body: bytes, error: type[Exception], text: str
    ) -> None:
        """Every failed call raises a CacheAPIError naming the call and the reason."""
        cache.status, cache.body = status, body
        with pytest.raises(error, match=text) as exc:
            api.stats()
        assert isinstance(exc.value, CacheAPIError) and "GET /api/v1/stats" in str(exc.value)
        assert exc.value.status == (status if status >= 400 else 0)

    def test_no_answer_is_unreachable(self) -> None:
        """A refused connection is CacheUnreachable, not a requests exception."""
        with CacheAPI("http://127.0.0.1:9", None, timeout=2) as api, pytest.raises(CacheUnreachable):
            api.images()

    def test_the_refusal_keeps_code_and_detail(self, cache: StandIn, api: CacheAPI) -> None:
        """A refused prefetch says which registry the cache has no upstream for."""
        cache.status, cache.body = 404, oci_error("NAME_UNKNOWN", "no upstream", {"registry": "x.io"})
        with pytest.raises(NotFound) as exc:
            api.prefetch("x.io/a:1", wait=1)
        assert (exc.value.code, exc.value.detail) == ("NAME_UNKNOWN", {"registry": "x.io"})

    def test_a_failed_fill_is_an_answer(self, cache: StandIn, api: CacheAPI) -> None:
        """A 502 that carries a progress document is the fill's outcome, not an error."""
        cache.status = 502
        cache.body = json.dumps({"image": "r/a:1", "state": "failed", "errors": ["upstream down"]}).encode()
        progress = api.prefetch("r/a:1", wait=1)
        assert (progress.state, progress.errors) == ("failed", ("upstream down",))


class TestRecords:
    def test_images_are_typed(self, cache: StandIn, api: CacheAPI) -> None:
        """Fields the client does not know are ignored; the ones it knows are typed."""
        cache.body = json.dumps({"images": [{
            "image": "r/a:1", "digest": D1, "fetched_at": 5, "blobs_known": 3, "blobs_stored": 3,
            "bytes_stored": 30, "pinned": True, "complete": True, "variant": None, "variant_state": "none",
        }]}).encode()  # fmt: skip
        assert api.images() == [CachedImage("r/a:1", D1, None, 5.0, 3, 3, 30, True, None, "none")]

    @pytest.mark.parametrize(
        "item",
        [{"digest": D1}, "r/a:1", {"image": "r/a:1", "blobs_known": "x"}, {"image": "r/a:1", "pinned": "no"}],
        ids=["no-image", "not-an-object", "not-a-number", "not-a-bool"],
    )
    def test_a_malformed_item_is_a_bad_answer(self, cache: StandIn, api: CacheAPI, item: Any) -> None:
        cache.body = json.dumps({"images": [item]}).encode()
        with pytest.raises(BadAnswer, match="admin API"):
            api.images()

    def test_popular_sends_only_what_is_given(self, cache: StandIn, api: CacheAPI) -> None:
        """Unset window, half-life and minimum are the cache's defaults: not sent."""
        cache.body = json.dumps({"images": [{"image": "r/a:1", "score": 2.5, "size": None}]}).encode()
        assert api.popular(40) == [PopularImage("r/a:1", 2.5)]
        assert api.popular(3, window=86400, half_life=0, min_pulls=2) == [PopularImage("r/a:1", 2.5)]
        assert [path for _, path, _ in cache.asked] == [
            "/api/v1/popular?limit=40",
            "/api/v1/popular?limit=3&window=86400s&min_pulls=2&half_life=0s",
        ]

    def test_deploy_feed(self, cache: StandIn, api: CacheAPI) -> None:
        """The feed's events and its next cursor; the cursor is sent back exactly."""
        cache.body = json.dumps({"events": [{"image": "r/a:1", "vm": "198.18.1.11", "ts": 7.25}],
                                 "next": 7.25}).encode()  # fmt: skip
        feed = api.deploy_events(vm="198.18.1.12", after=1.5, wait=0)
        assert feed.events == (DeployEvent("r/a:1", "198.18.1.11", 7.25),) and feed.next == 7.25
        assert cache.asked[-1][1] == "/api/v1/events/deploys?vm=198.18.1.12&wait=0&after=1.5"

    def test_prefetch_sends_only_what_differs_from_the_cache_defaults(
        self, cache: StandIn, api: CacheAPI
    ) -> None:
        cache.body = json.dumps({"image": "r/a:1", "state": "done"}).encode()
        api.prefetch("r/a:1", wait=2)
        api.prefetch("r/a:1", wait=2, platforms=["linux/arm64"], background=True, pin=True,
                     schedule="s", limits={"concurrency": 1, "bandwidth": 8}, registry_auth="dTpw",
                     transcode=False)  # fmt: skip
        assert [body for _, _, body in cache.asked] == [
            {"image": "r/a:1", "wait": 2},
            {"image": "r/a:1", "wait": 2, "platforms": ["linux/arm64"], "priority": "background", "pin": True,
             "schedule": "s", "limits": {"concurrency": 1, "bandwidth": 8}, "registry_auth": "dTpw",
             "transcode": False},
        ]  # fmt: skip
