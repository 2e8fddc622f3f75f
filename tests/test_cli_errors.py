"""Long commands show progress; a wrong URL, a wrong token or an unreachable NIC cache is one
readable line on stderr and exit status 1 (never a traceback)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from faas_accel.cacheapi import transport_reason
from faas_accel.testbed.cache import FAAS_ACCEL, TOKEN, Cache
from faas_accel.testbed.procs import free_port
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.tcpproxy import TcpProxy
from tests.conftest import LAB, Seeded


def faas_accel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FAAS_ACCEL, *args], capture_output=True, text=True, timeout=120, check=False)


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The single `Error: ...` line of a failed command."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    return lines[0].removeprefix("Error: ")


def prepull_once(cache_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return faas_accel(
        "prepull",
        "once",
        "--cache",
        cache_url,
        "--mirror-host",
        "127.0.0.1:5000",
        "--address",
        "/nonexistent/containerd.sock",
        *extra,
    )


@pytest.fixture
def closed_port() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


class TestUnreachable:
    @pytest.mark.parametrize(
        "argv",
        [["cache", "prefetch", "registry.lab/lab/hello:1", "--url"], ["cache", "ls", "--url"]],
        ids=["prefetch", "ls"],
    )
    def test_cache_commands(self, closed_port: str, argv: list[str]) -> None:
        """Nothing listening: the cache commands say so in one line."""
        message = one_line_error(faas_accel(*argv, closed_port, "--token", "t"))
        reason = "connection refused (is the cache running, on that port?)"
        assert message == f"cannot reach the NIC cache at {closed_port}: {reason}"

    def test_prepull(self, closed_port: str) -> None:
        """prepull once against a NIC that is down fails in one line."""
        message = one_line_error(prepull_once(closed_port, "--token", "t"))
        assert message.startswith(f"cannot reach the NIC cache at {closed_port}: connection refused")

    def test_not_a_url(self) -> None:
        """A --url that is not http(s)://host is refused before any request."""
        assert "is not a cache URL" in one_line_error(faas_accel("cache", "ls", "--url", "198.18.1.1:5000"))
        res = prepull_once("198.18.1.1:5000")
        assert res.returncode == 2 and "is not a cache URL" in res.stderr and "Traceback" not in res.stderr

    @pytest.mark.parametrize(
        ("exc", "reason"),
        [
            (requests.ConnectTimeout("x"), "no answer within 10 s (is the NIC up, and the address right?)"),
            (requests.ConnectionError("[Errno -2] Name or service not known"), "unknown host name"),
            (requests.ConnectionError("[Errno 113] No route to host"), "no route to host"),
        ],
        ids=["timeout", "dns", "no-route"],
    )
    def test_reasons(self, exc: requests.RequestException, reason: str) -> None:
        """requests' long exception texts become a few words."""
        assert transport_reason(exc, 10).startswith(reason)


class TestWrongServer:
    def test_token(self, cache: Cache) -> None:
        """A wrong admin token: the cache commands and prepull name the token."""
        expected = "the cache refused the admin token (401): pass --token or set NIC_CACHE_ADMIN_TOKEN"
        assert one_line_error(faas_accel("cache", "ls", "--url", cache.url, "--token", "wrong")) == expected
        res = faas_accel("cache", "prefetch", f"{LAB}/lab/hello:1", "--url", cache.url, "--token", "wrong")
        assert one_line_error(res) == expected
        assert (
            one_line_error(prepull_once(cache.url, "--token", "wrong")) == f"GET /api/v1/images: {expected}"
        )

    def test_url_of_something_else(self, upstream: Registry) -> None:
        """A URL that answers but is not the cache (here: the upstream registry) is named as such."""
        message = one_line_error(faas_accel("cache", "ls", "--url", upstream.url, "--token", "t"))
        assert message == (
            f"{upstream.url}/api/v1/images answered HTTP 404 Not Found with something not JSON, "
            "not the cache's admin API: is the URL the NIC cache's?"
        )


class TestProgress:
    def test_prefetch_shows_the_plan_then_the_result(
        self, cache_factory: Callable[..., Cache], seeded: Seeded, tmp_path: Path
    ) -> None:
        """prefetch says what it will fetch before it starts, then what it did."""
        cache = cache_factory()
        res = faas_accel("cache", "prefetch", f"{LAB}/lab/multilayer:1", "--url", cache.url, "--token", TOKEN)
        assert res.returncode == 0, res.stderr
        blobs = len(seeded.multilayer.blob_digests)
        assert f"{LAB}/lab/multilayer:1: {blobs} of {blobs} blobs to fetch" in res.stderr
        assert res.stdout.startswith(f"{LAB}/lab/multilayer:1: done — {blobs}/{blobs} blobs")
        again = faas_accel(
            "cache", "prefetch", f"{LAB}/lab/multilayer:1", "--url", cache.url, "--token", TOKEN
        )
        assert f"0 of {blobs} blobs to fetch" in again.stderr and f"({blobs} already cached)" in again.stdout

    def test_a_slow_prefetch_reports_as_it_goes(
        self, cache_factory: Callable[..., Cache], seeded: Seeded
    ) -> None:
        """Behind a 1 MB/s upstream (multilayer: ~4.5 MB, so at least 4 s), progress lines
        with blobs and bytes come before the result."""
        slow = TcpProxy(("127.0.0.1", seeded.registry.port), rate=1_000_000)
        try:
            cache = cache_factory({LAB: slow.url})
            res = faas_accel(
                "cache", "prefetch", f"{LAB}/lab/multilayer:1", "--url", cache.url, "--token", TOKEN
            )
        finally:
            slow.close()
        assert res.returncode == 0, res.stderr
        blobs = len(seeded.multilayer.blob_digests)
        progress = [line for line in res.stderr.splitlines() if f"/{blobs} blobs, " in line]
        assert progress and all("%" in line for line in progress), (res.stderr, res.stdout)
        assert "done" in res.stdout

    def test_prefetch_of_an_unknown_image_fails_in_one_line(
        self, cache_factory: Callable[..., Cache]
    ) -> None:
        """An image the upstream does not have: one line, before any fill starts."""
        cache = cache_factory()
        message = one_line_error(
            faas_accel("cache", "prefetch", f"{LAB}/lab/nope:1", "--url", cache.url, "--token", TOKEN)
        )
        assert message.startswith(("HTTP 404 MANIFEST_UNKNOWN", "HTTP 404 NAME_UNKNOWN")), message
