"""The NIC cache under gunicorn against a real CNCF registry and real clients.

Upstream: docker-registry seeded with images the tests build. Clients: skopeo, containerd
(`ctr`), dockerd. Every pulled image must be byte-identical to the upstream's.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from faas_accel.testbed import oci
from faas_accel.testbed.cache import FAAS_ACCEL, Cache
from faas_accel.testbed.oci import assert_dir_matches, skopeo_copy
from faas_accel.testbed.procs import run, wait_for
from faas_accel.testbed.registry import Registry
from faas_accel.testbed.tcpproxy import TcpProxy
from tests.conftest import HELLO_TEXT, Seeded

pytestmark = pytest.mark.integration
LAB = "registry.lab"  # how the tests' image references name the upstream


def get(cache: Cache, path: str, **kw: object) -> requests.Response:
    return requests.get(f"{cache.url}{path}", timeout=30, **kw)  # type: ignore[arg-type]


class TestSkopeo:
    def test_copy_is_byte_identical_and_second_copy_is_all_hits(
        self, cache: Cache, seeded: Seeded, tmp_path: Path
    ) -> None:
        """A multi-layer image copied through the cache matches upstream; a second copy
        fetches nothing more upstream."""
        image = seeded.multilayer
        before = seeded.registry.blob_gets()
        first = skopeo_copy(f"{cache.host}/{LAB}/lab/multilayer:1", tmp_path / "a")
        assert first.returncode == 0, first.stderr
        assert_dir_matches(tmp_path / "a", image)
        second = skopeo_copy(f"{cache.host}/{LAB}/lab/multilayer:1", tmp_path / "b")
        assert second.returncode == 0, second.stderr
        assert_dir_matches(tmp_path / "b", image)
        fetched = seeded.registry.blob_gets() - before
        assert {d: fetched[d] for d in image.blob_digests} == {d: 1 for d in image.blob_digests}
        assert cache.metric("nic_cache_hits_total") >= len(image.blob_digests) + 1
        assert set(image.blob_digests) <= cache.stored_blobs()

    def test_multiarch_index_copies_whole(
        self, cache: Cache, seeded: Seeded, tmp_path: Path
    ) -> None:
        """`skopeo copy --all` of a multi-arch index through the cache keeps the index digest."""
        out = tmp_path / "all"
        result = skopeo_copy(f"{cache.host}/{LAB}/lab/multiarch:1", out, "--all")
        assert result.returncode == 0, result.stderr
        index = (out / "manifest.json").read_bytes()
        assert "sha256:" + hashlib.sha256(index).hexdigest() == seeded.multiarch.digest
        for img in seeded.multiarch.images:
            assert (out / img.digest.split(":")[1] / "manifest.json").exists() or (
                out / f"{img.digest.split(':')[1]}.manifest.json"
            ).exists()

    def test_shared_base_layer_fetched_once(
        self, cache: Cache, seeded: Seeded, tmp_path: Path
    ) -> None:
        """Two images sharing a base layer cost one upstream fetch of that layer."""
        before = seeded.registry.blob_gets(seeded.app_base.digest)
        for name in ("app-a", "app-b"):
            result = skopeo_copy(f"{cache.host}/{LAB}/lab/{name}:1", tmp_path / name)
            assert result.returncode == 0, result.stderr
        assert_dir_matches(tmp_path / "app-b", seeded.app_b)
        after = seeded.registry.blob_gets(seeded.app_base.digest)
        assert after[seeded.app_base.digest] - before[seeded.app_base.digest] == 1


class TestProtocol:
    @pytest.mark.parametrize(
        "path",
        [f"/v2/{LAB}/lab/hello/manifests/1", "/v2/lab/hello/manifests/1",
         f"/v2/lab/hello/manifests/1?ns={LAB}"],
        ids=["rewritten", "default-upstream", "ns-param"],
    )  # fmt: skip
    def test_manifest_routes(self, cache: Cache, seeded: Seeded, path: str) -> None:
        """All three routing forms reach the upstream and return the manifest with headers."""
        resp = get(cache, path, headers={"Accept": oci.OCI_MANIFEST})
        assert resp.status_code == 200, resp.text
        assert resp.headers["Docker-Content-Digest"] == seeded.hello.digest
        assert resp.headers["Content-Type"] == oci.OCI_MANIFEST
        assert int(resp.headers["Content-Length"]) == len(resp.content) == seeded.hello.size
        head = requests.head(f"{cache.url}{path}", timeout=10)
        assert head.status_code == 200
        assert head.headers["Docker-Content-Digest"] == seeded.hello.digest
        assert int(head.headers["Content-Length"]) == seeded.hello.size

    def test_blob_range_on_miss_and_hit(self, cache: Cache, seeded: Seeded) -> None:
        """Range requests get 206 with the right bytes, whether the blob is cached or not."""
        layer = seeded.multilayer.layers[-1]
        path = f"/v2/{LAB}/lab/multilayer/blobs/{layer.digest}"
        for _ in ("miss", "hit"):
            resp = get(cache, path, headers={"Range": "bytes=100-199"})
            assert resp.status_code == 206
            assert resp.content == layer.bytes[100:200]
            assert resp.headers["Content-Range"] == f"bytes 100-199/{layer.size}"
            cache.wait_idle()
        full = get(cache, path)
        assert full.status_code == 200 and full.content == layer.bytes
        bad = get(cache, path, headers={"Range": f"bytes={layer.size + 10}-"})
        assert bad.status_code == 416
        assert bad.json()["errors"][0]["code"] == "RANGE_INVALID"

    def test_blob_head_does_not_fill(self, cache: Cache, seeded: Seeded) -> None:
        """HEAD of an uncached blob answers its size without storing it."""
        layer = seeded.app_a.layers[-1]
        resp = requests.head(f"{cache.url}/v2/{LAB}/lab/app-a/blobs/{layer.digest}", timeout=10)
        assert resp.status_code == 200
        assert int(resp.headers["Content-Length"]) == layer.size
        assert layer.digest not in cache.stored_blobs()

    def test_tags_list(self, cache: Cache) -> None:
        """tags/list is passed through from the upstream."""
        resp = get(cache, f"/v2/{LAB}/lab/hello/tags/list")
        assert resp.status_code == 200
        assert resp.json() == {"name": "lab/hello", "tags": ["1"]}

    @pytest.mark.parametrize(
        ("method", "path", "status", "code"),
        [
            ("GET", "/v2/Lab/Hello/manifests/1", 400, "NAME_INVALID"),
            ("GET", "/v2/lab/hello/manifests/bad!tag", 400, "TAG_INVALID"),
            ("GET", "/v2/lab/hello/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
            ("GET", "/v2/lab/hello/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
            ("GET", "/v2/lab/hello/blobs/notadigest", 400, "DIGEST_INVALID"),
            ("GET", "/v2/lab/../../etc/passwd/manifests/1", 400, "NAME_INVALID"),
            ("GET", "/v2/lab/..%2f..%2fetc/blobs/sha256:" + "0" * 64, 400, "NAME_INVALID"),
            ("GET", "/v2/lab/hello/manifests/2", 404, "MANIFEST_UNKNOWN"),
            ("GET", "/v2/lab/hello/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
            ("GET", "/v2/lab/nosuchrepo/tags/list", 404, "NAME_UNKNOWN"),
            ("GET", "/v2/lab/hello/manifests/1?ns=unknown.example", 404, "NAME_UNKNOWN"),
            ("POST", "/v2/lab/hello/blobs/uploads/", 405, "UNSUPPORTED"),
            ("PUT", "/v2/lab/hello/manifests/1", 405, "UNSUPPORTED"),
            ("DELETE", "/v2/lab/hello/manifests/1", 405, "UNSUPPORTED"),
        ],
        ids=["upper-case", "bad-tag", "bad-digest", "unsupported-algo", "no-algo",
             "dotdot", "encoded-traversal", "unknown-tag", "unknown-blob", "unknown-repo",
             "unknown-ns", "push", "put-manifest", "delete"],
    )  # fmt: skip
    def test_bad_requests_get_oci_errors(
        self, cache: Cache, method: str, path: str, status: int, code: str
    ) -> None:
        """Malformed or unknown input gets the OCI error JSON with the right code."""
        conn = http.client.HTTPConnection(cache.host, timeout=10)  # sends the path verbatim
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == status, body
        assert json.loads(body)["errors"][0]["code"] == code
        assert not cache.tmp_files()

    def test_admin_api_needs_the_token(self, cache: Cache) -> None:
        """Admin calls without or with a wrong token get 401 and change nothing."""
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp5"}):
            resp = requests.post(f"{cache.url}/api/v1/prefetch", json={"image": f"{LAB}/lab/hello:1"},
                                 headers=headers, timeout=10)  # fmt: skip
            assert resp.status_code == 401
            assert resp.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert cache.stored_blobs() == set()

    def test_prefetch_list_and_delete(self, cache: Cache, seeded: Seeded) -> None:
        """Prefetch fills every blob of the amd64 image of an index; ls shows it; delete removes it."""
        resp = requests.post(f"{cache.url}/api/v1/prefetch", headers=cache.auth, timeout=60,
                             json={"image": f"{LAB}/lab/multiarch:1", "wait": 30})  # fmt: skip
        assert resp.status_code == 200, resp.text
        body = resp.json()
        amd64 = seeded.multiarch.image_for("linux", "amd64")
        assert body["state"] == "done" and body["blobs_total"] == len(amd64.blob_digests)
        stored = cache.stored_blobs()
        assert set(amd64.blob_digests) <= stored
        arm64 = seeded.multiarch.image_for("linux", "arm64")
        assert not set(arm64.layer_digests) & stored
        listed = run([*FAAS_ACCEL, "cache", "ls", "--url", cache.url, "--token", "test-admin-token"])
        assert f"{LAB}/lab/multiarch:1" in listed.stdout
        gone = requests.delete(f"{cache.url}/api/v1/images/{LAB}/lab/multiarch:1", headers=cache.auth,
                               timeout=10).json()["deleted"]  # fmt: skip
        assert set(amd64.blob_digests) <= set(gone)
        assert not set(amd64.blob_digests) & cache.stored_blobs()

    def test_metrics_endpoint(self, cache: Cache) -> None:
        """/metrics serves Prometheus text aggregated over the workers."""
        for _ in range(6):
            assert get(cache, "/v2/lab/hello/manifests/1").status_code == 200
        text = get(cache, "/metrics").text
        wanted = 'nic_cache_requests_total{kind="manifests",method="GET",status="200"}'
        line = next(row for row in text.splitlines() if row.startswith(wanted))
        assert float(line.split()[-1]) == 6
        assert "nic_cache_store_bytes" in text


class TestSingleFlight:
    def test_eight_clients_one_upstream_fetch_per_blob(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], tmp_path: Path
    ) -> None:
        """8 skopeo clients pulling one uncached multi-layer image at once: all succeed,
        byte-identical, and the upstream serves each blob exactly once."""
        slow = TcpProxy(("127.0.0.1", seeded.registry.port), rate=4_000_000)
        try:
            cache = cache_factory({LAB: slow.url})
            image = seeded.multilayer
            before = seeded.registry.blob_gets()
            barrier = threading.Barrier(8)

            def pull(i: int) -> subprocess.CompletedProcess[str]:
                barrier.wait()
                return skopeo_copy(f"{cache.host}/{LAB}/lab/multilayer:1", tmp_path / f"c{i}")

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(pull, range(8)))
            for i, result in enumerate(results):
                assert result.returncode == 0, result.stderr
                assert_dir_matches(tmp_path / f"c{i}", image)
            fetched = seeded.registry.blob_gets() - before
            assert {d: fetched[d] for d in image.blob_digests} == {d: 1 for d in image.blob_digests}
            sizes = {b.digest: b.size for b in image.blobs()}
            assert cache.metric("nic_cache_upstream_bytes_total") == sum(
                sizes[d] for d in image.blob_digests
            )
        finally:
            slow.close()


@pytest.fixture
def private_image(seeded: Seeded) -> oci.Image:
    """An image no other test pulls: one 6 MB random layer, so faults can be injected."""
    image = oci.image([oci.random_layer(6_000_000, seed=int.from_bytes(oci.random_bytes(4, 99), "big"))])
    oci.publish(image, f"{seeded.registry.host}/lab/private:{image.digest[7:19]}")
    return image


def registry_blob_file(registry: Registry, digest: str) -> Path:
    hexd = digest.split(":")[1]
    return registry.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


class TestFaults:
    def test_upstream_dies_mid_blob(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], private_image: oci.Image
    ) -> None:
        """Upstream gone mid-blob: the reader gets an error, nothing is stored, and the next
        request succeeds once the upstream is back."""
        layer = private_image.layers[0]
        slow = TcpProxy(("127.0.0.1", seeded.registry.port), rate=1_500_000)
        try:
            cache = cache_factory({LAB: slow.url})
            path = f"/v2/{LAB}/lab/private/blobs/{layer.digest}"
            errors: list[BaseException] = []
            got = bytearray()

            def read() -> None:
                try:
                    with get(cache, path, stream=True) as resp:
                        assert resp.status_code == 200
                        for chunk in resp.iter_content(65536):
                            got.extend(chunk)
                except requests.RequestException as exc:
                    errors.append(exc)

            reader = threading.Thread(target=read)
            reader.start()
            wait_for(lambda: len(got) > 1_000_000, 30, "a MB to reach the client")
            seeded.registry.stop()
            slow.cut()
            reader.join(60)
            assert errors, f"the client saw a complete response of {len(got)} bytes"
            assert len(got) < layer.size
            cache.wait_idle()
            assert layer.digest not in cache.stored_blobs()
            seeded.registry.start()
            again = get(cache, path)
            assert again.status_code == 200
            assert hashlib.sha256(again.content).hexdigest() == layer.digest[7:]
            assert layer.digest in cache.stored_blobs()
        finally:
            seeded.registry.start()
            slow.close()

    def test_corrupt_upstream_bytes_are_never_stored(
        self, seeded: Seeded, cache: Cache, private_image: oci.Image
    ) -> None:
        """Upstream bytes that do not hash to the digest: the client's response is cut before
        its last byte and nothing is stored; once upstream is sound the blob is served."""
        layer = private_image.layers[0]
        data_file = registry_blob_file(seeded.registry, layer.digest)
        original = data_file.read_bytes()
        data_file.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        try:
            path = f"/v2/{LAB}/lab/private/blobs/{layer.digest}"
            got = bytearray()
            with get(cache, path, stream=True) as resp:
                assert resp.status_code == 200, resp.text  # streamed as it lands: the check comes last
                with pytest.raises(requests.RequestException):
                    for chunk in resp.iter_content(65536):
                        got += chunk
            assert len(got) < layer.size
            cache.wait_idle()
            assert layer.digest not in cache.stored_blobs()
        finally:
            data_file.write_bytes(original)
        good = get(cache, path)
        assert good.status_code == 200 and good.content == original

    @pytest.mark.parametrize("ttl", ["5m", "0s"], ids=["fresh-tag", "stale-tag"])
    def test_upstream_down_serves_cached(
        self, seeded: Seeded, cache_factory: Callable[..., Cache], tmp_path: Path, ttl: str
    ) -> None:
        """With the upstream stopped, cached images still pull (a stale tag is served as is)."""
        cache = cache_factory({LAB: seeded.registry.url}, default_upstream=LAB, extra={"tag_ttl": ttl})
        ref = f"{cache.host}/{LAB}/lab/app-a:1"
        assert skopeo_copy(ref, tmp_path / "warm").returncode == 0
        seeded.registry.stop()
        try:
            result = skopeo_copy(ref, tmp_path / "cold")
            assert result.returncode == 0, result.stderr
            assert_dir_matches(tmp_path / "cold", seeded.app_a)
            uncached = get(cache, f"/v2/{LAB}/lab/app-b/manifests/1")
            assert uncached.status_code == 502
            assert uncached.json()["errors"][0]["code"] == "UPSTREAM_UNAVAILABLE"
        finally:
            seeded.registry.start()


class TestContainerd:
    def test_hosts_dir_mirror_pull_and_run(
        self, cache: Cache, seeded: Seeded, containerd_factory: Callable[..., object], tmp_path: Path
    ) -> None:
        """containerd configured by `faas-accel mirror-config containerd` pulls through the
        cache (upstream sees only the cache), gets the upstream's digest, and runs it."""
        ctrd = containerd_factory()
        hosts = tmp_path / "certs.d"
        run([*FAAS_ACCEL, "mirror-config", "containerd", "--mirror", cache.url,
             "--registry", f"{LAB}={seeded.registry.url}", "--config-path", str(hosts)])  # fmt: skip
        before = len(seeded.registry.requests())
        ref = f"{LAB}/lab/hello:1"
        ctrd.ctr("images", "pull", "--hosts-dir", str(hosts), ref, timeout=120)  # type: ignore[attr-defined]
        assert ctrd.image_digest(ref) == seeded.hello.digest  # type: ignore[attr-defined]
        assert set(seeded.hello.blob_digests) <= cache.stored_blobs()
        direct = [r for r in seeded.registry.requests()[before:] if "containerd" in r.user_agent]
        assert direct == [], "containerd went around the cache"
        out = ctrd.ctr("run", "--rm", ref, "hello-run").stdout  # type: ignore[attr-defined]
        assert out.strip() == HELLO_TEXT

    def test_rewritten_reference_pull_and_run(
        self, cache: Cache, seeded: Seeded, containerd_factory: Callable[..., object]
    ) -> None:
        """`ctr images pull <cache>/registry.lab/lab/app-a:1` (the hook's rewrite) works."""
        ctrd = containerd_factory()
        ref = f"{cache.host}/{LAB}/lab/app-a:1"
        ctrd.ctr("images", "pull", "--plain-http", ref, timeout=120)  # type: ignore[attr-defined]
        assert ctrd.image_digest(ref) == seeded.app_a.digest  # type: ignore[attr-defined]
        out = ctrd.ctr("run", "--rm", ref, "app-a-run").stdout  # type: ignore[attr-defined]
        assert out.strip() == "app-a"


@pytest.fixture
def linked_netns(netns_factory: Callable[[], object]) -> Iterator[tuple[str, str]]:
    """A network namespace joined to the host by a veth (198.18.250.1 host, .2 inside),
    with no other route: whatever runs inside can reach only the host side."""
    ns = netns_factory()
    name = ns.name  # type: ignore[attr-defined]
    host_if, ns_if = f"v{name[-8:]}h", f"v{name[-8:]}n"
    run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
    try:
        run(["ip", "link", "set", ns_if, "netns", name])
        run(["ip", "addr", "add", "198.18.250.1/30", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        ns.run("ip", "addr", "add", "198.18.250.2/30", "dev", ns_if)  # type: ignore[attr-defined]
        ns.run("ip", "link", "set", ns_if, "up")  # type: ignore[attr-defined]
        yield name, "198.18.250.1"
    finally:
        run(["ip", "link", "del", host_if], check=False)


class TestDockerd:
    def test_registry_mirrors_pull_and_run(
        self, seeded: Seeded, cache_factory: Callable[..., Cache],
        dockerd_factory: Callable[..., object], linked_netns: tuple[str, str], tmp_path: Path,
    ) -> None:
        """dockerd with `registry-mirrors` from `faas-accel mirror-config docker` pulls a
        docker.io image through the cache (the seeded registry stands in for Docker Hub)."""
        netns, host_ip = linked_netns
        cache = cache_factory({"docker.io": seeded.registry.url}, default_upstream="docker.io",
                              host=host_ip)  # fmt: skip
        daemon_json = tmp_path / "daemon.json"
        run([*FAAS_ACCEL, "mirror-config", "docker", "--mirror", cache.url,
             "--daemon-json", str(daemon_json)])  # fmt: skip
        dockerd = dockerd_factory(json.loads(daemon_json.read_text()), netns=netns)
        client = dockerd.client()  # type: ignore[attr-defined]
        image = client.images.pull("lab/hello", tag="1")
        assert f"lab/hello@{seeded.hello.digest}" in image.attrs["RepoDigests"]
        out = client.containers.run("lab/hello:1", network_mode="none", remove=True)
        assert out.decode().strip() == HELLO_TEXT
        assert set(seeded.hello.blob_digests) <= cache.stored_blobs()
