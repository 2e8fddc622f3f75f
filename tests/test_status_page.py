"""The cache's status page (`/status`): what headless Chromium shows matches the admin API,
the chart library is served from the package (no CDN), and the page asks for the token."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from faas_accel.testbed.cache import FAAS_ACCEL, TOKEN, Cache
from faas_accel.testbed.oci import skopeo_copy
from faas_accel.testbed.procs import Proc, stop, wait_for
from tests.conftest import LAB, Seeded, require
from tests.support.browser import Page, dump_dom, screenshot

UPLOT = Path(__file__).resolve().parents[1] / "nic_cache/api/static/uplot/uPlot.iife.min.js"


def admin(cache: Cache, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{cache.url}/api/v1/{path}", headers=cache.auth, timeout=60, **kw)


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


@pytest.fixture
def busy_cache(cache_factory: Callable[..., Cache], seeded: Seeded, tmp_path: Path) -> Cache:
    """A cache that served misses and hits to skopeo, recorded a deploy and ran a prewarm
    schedule through a real scheduler."""
    require("skopeo")
    cache = cache_factory()
    for n in range(2):  # the first pull misses, the second hits
        assert skopeo_copy(f"{cache.host}/{LAB}/lab/hello:1", tmp_path / f"pull{n}").returncode == 0
    assert admin(cache, "POST", "events/deploy", json={"image": f"{LAB}/lab/app-a:1", "function": "a"}).ok
    config = tmp_path / "prewarm.yml"
    schedule = f"{{name: base, interval: 1h, source: {{images: [{LAB}/lab/app-b:1]}}}}"
    config.write_text(f"cache: {{url: '{cache.url}', token: {TOKEN}}}\nschedules:\n  - {schedule}\n")
    proc = Proc([*FAAS_ACCEL, "prewarm", "run", "--config", str(config)], tmp_path / "prewarm.log")
    try:
        wait_for(lambda: admin(cache, "GET", "prewarm").json()["schedules"], 30, "the scheduler to register")
        answer = admin(cache, "POST", "prewarm/base/run", json={"wait": 60})
        assert answer.status_code == 200 and answer.json()["run"]["state"] == "done", answer.text
    finally:
        stop(proc)
    cache.wait_idle()
    return cache


class TestStatusPage:
    def test_chromium_shows_the_apis_numbers(self, busy_cache: Cache, tmp_path: Path) -> None:
        """Hit ratio, bytes saved, WAN bytes, fills in flight, top images, prewarm schedule and
        last run as the browser renders them equal what /api/v1 answers; uPlot drew the chart."""
        require("chromium", root=False)
        cache = busy_cache
        metrics = cache.stats()["metrics"]
        hits, misses = total(metrics, "nic_cache_hits_total"), total(metrics, "nic_cache_misses_total")
        served, wan = (
            total(metrics, "nic_cache_served_bytes_total"),
            total(metrics, "nic_cache_upstream_bytes_total"),
        )
        assert hits > 0 and misses > 0 and wan > 0 and served > wan
        dom = dump_dom(f"http://admin:{TOKEN}@{cache.host}/status")
        page = Page(dom)
        assert "hits" in page.stats, f"{dom[:2000]}\ncache log: {cache.log.read_text()[-2000:]}"
        assert page.stats["hits"] == str(int(hits)) and page.stats["misses"] == str(int(misses))
        assert float(page.stats["hit_ratio"]) == pytest.approx(hits / (hits + misses))
        assert page.stats["served_bytes"] == str(int(served)) and page.stats["wan_bytes"] == str(int(wan))
        assert page.stats["saved_bytes"] == str(int(served - wan))
        assert page.stats["fills_in_flight"] == "0" == str(int(total(metrics, "nic_cache_fills_in_flight")))
        popular = admin(cache, "GET", "popular", params={"limit": 10}).json()["images"]
        assert (
            {p["image"] for p in popular}
            == set(page.rows["image"])
            >= {f"{LAB}/lab/hello:1", f"{LAB}/lab/app-a:1"}
        )
        for p in popular:
            cells = page.rows["image"][p["image"]]
            assert cells[1:3] == [str(p["pulls"]), str(p["deploys"])]
        prewarm = admin(cache, "GET", "prewarm").json()
        (run,) = admin(cache, "GET", "prewarm/runs").json()["runs"]
        assert list(page.rows["schedule"]) == [s["name"] for s in prewarm["schedules"]] == ["base"]
        assert page.rows["schedule"]["base"][1] == "interval 1h"
        assert page.rows["run"][str(run["id"])][:3] == [str(run["id"]), "base", "request"]
        assert "done" in page.rows["run"][str(run["id"])]
        assert "uplot" in page.classes and "canvas" in page.tags, "uPlot did not draw the chart"
        out = Path(os.environ.get("FAAS_ACCEL_STATUS_SCREENSHOT") or tmp_path / "status.png")
        png = screenshot(f"http://admin:{TOKEN}@{cache.host}/status", out).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 900)


class TestAccess:
    def test_token_guards_the_page(self, cache: Cache) -> None:
        """/status asks browsers for the admin token (Basic) and takes a Bearer token; / redirects;
        the vendored chart library is served to anyone, from the package."""
        url = f"{cache.url}/status"
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic ")
        assert requests.get(url, auth=("anyone", "wrong"), timeout=10).status_code == 401
        assert requests.get(url, auth=("anyone", TOKEN), timeout=10).status_code == 200
        as_json = requests.get(f"{url}.json", headers=cache.auth, timeout=10)
        assert as_json.status_code == 200, (as_json.text, cache.log.read_text()[-4000:])
        assert as_json.json()["summary"]["hits"] == 0
        root = requests.get(f"{cache.url}/", allow_redirects=False, timeout=10)
        assert (root.status_code, root.headers["Location"]) == (302, "/status")
        lib = requests.get(f"{cache.url}/status/static/uplot/uPlot.iife.min.js", timeout=10)
        assert lib.status_code == 200 and lib.content == UPLOT.read_bytes()

    @pytest.mark.parametrize(("mode", "status"), [("open", 200), ("off", 404)], ids=["open", "off"])
    def test_config_flag(self, cache_factory: Callable[..., Cache], mode: str, status: int) -> None:
        """status_page: open serves it without a token; off hides it."""
        cache = cache_factory(extra={"status_page": mode})
        assert requests.get(f"{cache.url}/status", timeout=10).status_code == status
