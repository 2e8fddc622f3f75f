"""Faults through the real cache (gunicorn) and a real CNCF registry: kill -9 of a worker and
of the master mid-fill, a full disk (tmpfs), scrubbing, Range per RFC 9110, bounded tmp/,
and admin input that must get 400s."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from faas_accel.testbed import oci
from faas_accel.testbed.cache import FAAS_ACCEL, Cache
from faas_accel.testbed.procs import pid_alive, run, stop_pid, wait_for
from faas_accel.testbed.tcpproxy import TcpProxy
from tests.conftest import LAB, Seeded

pytestmark = pytest.mark.integration
MB = 1_000_000


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def layers(seeded: Seeded) -> list[oci.Layer]:
    """Three 6 MB random layers no other test pulls, pushed as lab/faults:<id>."""
    seed = int.from_bytes(os.urandom(4), "big")
    made = [oci.random_layer(6 * MB, seed=seed + i) for i in range(3)]
    image = oci.image(made)
    oci.publish(image, f"{seeded.registry.host}/lab/faults:{image.digest[7:19]}")
    return made


@pytest.fixture
def slow(seeded: Seeded) -> Iterator[TcpProxy]:
    """The seeded registry behind a 2 MB/s link."""
    proxy = TcpProxy(("127.0.0.1", seeded.registry.port), rate=2 * MB)
    yield proxy
    proxy.close()


def blob_path(digest: str) -> str:
    return f"/v2/{LAB}/lab/faults/blobs/{digest}"


class Reader(threading.Thread):
    """Streams one blob through the cache, keeping what arrived and how it ended."""

    def __init__(self, cache: Cache, digest: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{cache.url}{blob_path(digest)}"
        self.got = bytearray()
        self.status: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with requests.get(self.url, stream=True, timeout=60) as resp:
                self.status = resp.status_code
                for chunk in resp.iter_content(65536):
                    self.got.extend(chunk)
        except requests.RequestException as exc:
            self.error = exc


class TestKill:
    def test_master_kill9_mid_fill_restart_binds_and_the_fill_lands(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], slow: TcpProxy, layers: list[oci.Layer]
    ) -> None:
        """kill -9 of the master while a worker fills: the restarted master binds the same port
        at once, the orphan finishes its client's stream and its fill (fetched once), and once
        the orphans are gone nothing is left in tmp/."""
        layer = layers[0]
        cache = cache_factory({LAB: slow.url})
        before = seeded.registry.blob_gets(layer.digest)[layer.digest]
        reader = Reader(cache, layer.digest)
        reader.start()
        wait_for(lambda: len(reader.got) > MB, 30, "a MB to reach the client")
        orphans = cache.worker_pids()
        assert cache.proc is not None
        os.kill(cache.proc.pid, signal.SIGKILL)
        cache.proc.popen.wait()
        try:
            cache.start(timeout=20)
            hit = requests.get(f"{cache.url}/v2/", timeout=10)
            assert hit.status_code in (200, 401)
            reader.join(60)
            assert reader.error is None and reader.status == 200
            assert sha(bytes(reader.got)) == layer.digest
            wait_for(lambda: not any(pid_alive(p) for p in orphans), 40, "the orphans to exit")
            again = requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=30)
            assert again.status_code == 200 and sha(again.content) == layer.digest
            assert again.headers.get("Content-Length") == str(layer.size)
            assert seeded.registry.blob_gets(layer.digest)[layer.digest] - before == 1
            cache.stop()
            cache.start()
            assert cache.tmp_files(locks=True) == []
        finally:
            for pid in orphans:
                if pid_alive(pid):
                    stop_pid(pid)

    def test_worker_kill9_mid_fill_serves_nothing_partial(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], slow: TcpProxy, layers: list[oci.Layer]
    ) -> None:
        """kill -9 of the filling worker: its client is cut short, nothing is stored, the next
        pull gets the whole blob, and a restart leaves no temp or lock file."""
        layer = layers[1]
        cache = cache_factory({LAB: slow.url}, workers=1)
        reader = Reader(cache, layer.digest)
        reader.start()
        wait_for(lambda: len(reader.got) > MB, 30, "a MB to reach the client")
        (worker,) = cache.worker_pids()
        os.kill(worker, signal.SIGKILL)
        reader.join(60)
        assert len(reader.got) < layer.size
        assert layer.digest not in cache.stored_blobs()
        wait_for(lambda: cache.worker_pids() and cache.worker_pids() != [worker], 30, "a new worker")
        again = requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=60)
        assert again.status_code == 200 and sha(again.content) == layer.digest
        cache.stop()
        cache.start()
        assert cache.tmp_files(locks=True) == []


@pytest.fixture
def small_disk(tmpfs_factory: Callable[[str], Path]) -> Path:
    """A 24 MiB tmpfs."""
    return tmpfs_factory("24m")


class TestSpace:
    def test_concurrent_fills_and_a_full_disk(
        self, cache_factory: Callable[..., Cache], small_disk: Path, slow: TcpProxy,
        layers: list[oci.Layer],
    ) -> None:  # fmt: skip
        """Three concurrent (slow) 6 MB misses under a 16 MiB budget: all three clients get the
        whole blob, the one without room streamed through uncached (counted), no ENOSPC. With
        the disk then full, a hit is served and a miss still answers whole; once space is
        freed, nothing stored is corrupt and misses are stored again."""
        cache = cache_factory({LAB: slow.url}, extra={"capacity": "16MiB", "low_watermark": 0.9},
                              data_dir=small_disk / "data")  # fmt: skip
        with ThreadPoolExecutor(3) as pool:
            got = list(pool.map(lambda d: requests.get(f"{cache.url}{blob_path(d)}", timeout=60),
                                [layer.digest for layer in layers]))  # fmt: skip
        for resp, layer in zip(got, layers, strict=True):
            assert resp.status_code == 200, cache.log.read_text()[-3000:]
            assert sha(resp.content) == layer.digest
        cache.wait_idle()
        stored = [layer for layer in layers if layer.digest in cache.stored_blobs()]
        assert len(stored) == 2
        assert cache.metric("nic_cache_passthrough_total") == 1
        ballast = small_disk / "ballast"
        with open(ballast, "wb") as fh, contextlib.suppress(OSError):
            while True:  # until the disk is full
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        hit = requests.get(f"{cache.url}{blob_path(stored[0].digest)}", timeout=30)
        assert hit.status_code == 200 and sha(hit.content) == stored[0].digest
        (missing,) = [layer for layer in layers if layer not in stored]
        through = requests.get(f"{cache.url}{blob_path(missing.digest)}", timeout=60)
        assert through.status_code == 200 and sha(through.content) == missing.digest
        assert requests.get(f"{cache.url}/healthz", timeout=10).status_code == 200
        cache.wait_idle()
        ballast.unlink()
        result = run([*FAAS_ACCEL, "cache", "verify", "--config", str(cache.config_path)], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 quarantined" in result.stdout
        for layer in layers:
            again = requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=60)
            assert again.status_code == 200 and sha(again.content) == layer.digest
            cache.wait_idle()
        assert len(set(cache.stored_blobs()) & {layer.digest for layer in layers}) >= 2


class TestScrub:
    def test_verify_quarantines_a_corrupt_blob_and_it_is_fetched_again(
        self, seeded: Seeded, cache: Cache, layers: list[oci.Layer]
    ) -> None:
        """`faas-accel cache verify` finds a same-size corruption, exits 1 naming it, and the
        next request fetches the blob from upstream again, whole."""
        layer = layers[2]
        assert requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=30).status_code == 200
        cache.wait_idle()
        stored = cache.data_dir / "blobs/sha256" / layer.hex[:2] / layer.hex
        stored.write_bytes(b"\0" * layer.size)
        before = seeded.registry.blob_gets(layer.digest)[layer.digest]
        result = run([*FAAS_ACCEL, "cache", "verify", "--config", str(cache.config_path)], check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert layer.digest in result.stdout and "1 quarantined" in result.stdout
        again = requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=30)
        assert again.status_code == 200 and sha(again.content) == layer.digest
        assert seeded.registry.blob_gets(layer.digest)[layer.digest] - before == 1

    def test_restart_quarantines_a_truncated_blob(
        self, seeded: Seeded, cache: Cache, layers: list[oci.Layer]
    ) -> None:
        """A blob cut short on disk (a power loss before fsync) is found at start and refetched,
        never served short."""
        layer = layers[0]
        assert requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=30).status_code == 200
        cache.wait_idle()
        cache.stop()
        stored = cache.data_dir / "blobs/sha256" / layer.hex[:2] / layer.hex
        stored.write_bytes(layer.bytes[: layer.size // 2])
        cache.start()
        again = requests.get(f"{cache.url}{blob_path(layer.digest)}", timeout=30)
        assert again.status_code == 200 and sha(again.content) == layer.digest
        assert "1 quarantined" in cache.log.read_text()


class TestSurface:
    def test_range_per_rfc_9110(self, cache: Cache, slow: TcpProxy, layers: list[oci.Layer],
                                cache_factory: Callable[..., Cache]) -> None:  # fmt: skip
        """A malformed or multi-range Range is ignored (200, whole blob); an early 10-byte range
        of an uncached blob is answered while the fill is still running."""
        slow_cache = cache_factory({LAB: slow.url})
        layer = layers[1]
        early = requests.get(f"{slow_cache.url}{blob_path(layer.digest)}", headers={"Range": "bytes=0-9"},
                             timeout=30)  # fmt: skip
        assert early.status_code == 206 and early.content == layer.bytes[:10]
        assert layer.digest not in slow_cache.stored_blobs()  # 6 MB at 2 MB/s: still filling
        for header in ("bytes=abc", "bytes=0-1,5-6", "lines=0-5"):
            url = f"{cache.url}{blob_path(layer.digest)}"
            resp = requests.get(url, headers={"Range": header}, timeout=30)
            assert resp.status_code == 200, header
            assert sha(resp.content) == layer.digest

    def test_unknown_digests_and_tags_leave_no_files(self, cache: Cache) -> None:
        """Hundreds of requests for unknown blobs and tags leave tmp/ empty, locks included."""
        for i in range(150):
            digest = sha(str(i).encode())
            base = f"{cache.url}/v2/{LAB}/lab/hello"
            assert requests.get(f"{base}/blobs/{digest}", timeout=10).status_code == 404
            assert requests.get(f"{base}/manifests/no{i}", timeout=10).status_code == 404
        assert cache.tmp_files(locks=True) == []

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [("POST", "/api/v1/prefetch", {"image": f"{LAB}/lab/hello:1", "wait": 1e308}),
         ("POST", "/api/v1/prefetch", {"image": f"{LAB}/lab/hello:1", "wait": -1}),
         ("PUT", f"/api/v1/prewarm/runs/{10**30}", {}),
         ("POST", "/api/v1/prewarm/heartbeat", {"holder": "x", "ttl": 1e308}),
         ("GET", f"/api/v1/prewarm/runs?limit={10**30}", None)],
        ids=["huge-wait", "negative-wait", "huge-run-id", "huge-ttl", "huge-limit"],
    )  # fmt: skip
    def test_admin_input_out_of_range_gets_400(
        self, cache: Cache, method: str, path: str, body: object
    ) -> None:
        """Numbers no call can mean get a 400 OCI error, never a 500."""
        resp = requests.request(method, f"{cache.url}{path}", json=body, headers=cache.auth, timeout=10)
        assert resp.status_code == 400, resp.text
        assert resp.json()["errors"][0]["code"] == "NAME_INVALID"
