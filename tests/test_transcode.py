"""Re-encoded layers: the recoder, the rules for offering variants, the transcoder on a real
store, and real containerd/dockerd pulling through a cache that serves zstd variants."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from typing import BinaryIO

import pytest
import requests
import zstandard

from faas_accel.testbed import oci
from faas_accel.testbed.cache import Cache
from faas_accel.testbed.runtimes import Containerd, Dockerd
from nic_cache.config import TranscodeConfig
from nic_cache.errors import TranscodeError
from nic_cache.manifest import OCI_MANIFEST
from nic_cache.proxy import ManifestResult
from nic_cache.store import Store
from nic_cache.transcode import TAR_TYPE, ZSTD_TYPE, Recoded, recode
from nic_cache.transcoder import Transcoder
from nic_cache.variants import PullContext, client_reads, is_rewritten, offer_variant, rewrite_layers
from tests.conftest import LAB, Seeded

CONTAINERD_UA = "containerd/1.6.20~ds1"
DOCKER_UA = "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1.0 os/linux arch/amd64"
WRONG_DIFF_ID = "sha256:" + "0" * 64


def image_with(files: dict[str, bytes]) -> oci.Image:
    return oci.busybox_image(files, cmd=["/bin/busybox", "cat", "/hello.txt"])


def ctx(
    *, by_digest: bool = False, rewritten: bool = True, ua: str | None = CONTAINERD_UA, **opt_outs: bool
) -> PullContext:
    """A manifest request's context; by default a containerd tag pull through the rewritten reference."""
    return PullContext(by_digest=by_digest, rewritten=rewritten, user_agent=ua, **opt_outs)


def stored(store: Store, img: oci.Image) -> str:
    """Put an image's config, layers and manifest into `store`; the manifest digest."""
    for blob in img.blobs():
        store.put_bytes(blob.digest, blob.bytes, blob.media_type)
    store.link_manifest(img.digest, img.blob_digests)
    return img.digest


class TestRecode:
    def test_zstd_and_tar_keep_the_tar_and_report_its_diff_id(self) -> None:
        """The zstd stream decodes to the very tar the gzip held; tar is that tar itself."""
        layer = oci.layer({"a.txt": b"hello " * 5000, "b.bin": bytes(range(256)) * 300})
        tar = gzip.decompress(layer.bytes)
        out = io.BytesIO()
        z = recode(io.BytesIO(layer.bytes), out, encoding="zstd", level=3)
        assert (z.diff_id, z.media_type, z.source_size) == (layer.diff_id, ZSTD_TYPE, layer.size)
        assert zstandard.ZstdDecompressor().decompress(out.getvalue(), max_output_size=len(tar) * 2) == tar
        assert z.digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest() and z.size == len(
            out.getvalue()
        )
        plain = io.BytesIO()
        t = recode(io.BytesIO(layer.bytes), plain, encoding="tar")
        assert (plain.getvalue(), t.media_type, t.diff_id) == (tar, TAR_TYPE, layer.diff_id)

    def test_several_gzip_members_are_one_stream(self) -> None:
        """A gzip made of concatenated members decodes to their concatenation (as Go's reader does)."""
        data = gzip.compress(b"first ") + gzip.compress(b"second")
        r = recode(io.BytesIO(data), io.BytesIO(), encoding="tar")
        assert r.diff_id == "sha256:" + hashlib.sha256(b"first second").hexdigest()

    @pytest.mark.parametrize(
        "data, message",
        [
            (b"not gzip at all", "not valid gzip"),
            (gzip.compress(b"x" * 100000)[:-20], "truncated"),
        ],
        ids=["garbage", "truncated"],
    )
    def test_bad_gzip_is_a_transcode_error(self, data: bytes, message: str) -> None:
        with pytest.raises(TranscodeError, match=message):
            recode(io.BytesIO(data), io.BytesIO(), encoding="zstd")

    def test_unknown_encoding_is_refused(self) -> None:
        with pytest.raises(TranscodeError, match="unknown encoding 'brotli'"):
            recode(io.BytesIO(b""), io.BytesIO(), encoding="brotli")


class TestRules:
    @pytest.mark.parametrize(
        "ua, encoding, expected",
        [
            (CONTAINERD_UA, "zstd", True),
            ("containerd/1.4.13", "zstd", False),
            (DOCKER_UA, "zstd", False),
            ("docker/24.0.7 go/go1.20", "zstd", True),
            ("skopeo/1.9", "zstd", False),
            (None, "zstd", False),
            (None, "tar", True),
        ],
        ids=["containerd-1.6", "containerd-1.4", "docker-20.10", "docker-24", "skopeo", "none", "tar-any"],
    )
    def test_which_clients_read_which_encoding(self, ua: str | None, encoding: str, expected: bool) -> None:
        assert client_reads(ua, encoding) is expected

    @pytest.mark.parametrize(
        "pull, opt_ins, expected",
        [
            (ctx(), {}, True),
            (ctx(by_digest=True), {}, False),
            (
                ctx(by_digest=True),
                {"digest_pinned": True},
                True,
            ),
            (ctx(rewritten=False), {}, False),
            (
                ctx(rewritten=False),
                {"mirror_form": True},
                True,
            ),
            (ctx(ua="skopeo/1.9"), {}, False),
            (
                ctx(upstream_opted_out=True),
                {},
                False,
            ),
            (
                ctx(image_opted_out=True),
                {"mirror_form": True, "digest_pinned": True},
                False,
            ),
        ],
        ids=[
            "tag-rewritten",
            "digest-pinned",
            "digest-pinned-opted-in",
            "mirror-form",
            "mirror-form-opted-in",
            "old-client",
            "upstream-opt-out",
            "function-opt-out",
        ],
    )
    def test_when_a_variant_is_offered(
        self, pull: PullContext, opt_ins: dict[str, bool], expected: bool
    ) -> None:
        assert offer_variant(pull, encoding="zstd", **opt_ins) is expected
        assert offer_variant(pull, encoding="off", **opt_ins) is False

    def test_rewritten_form_is_the_registry_host_first(self) -> None:
        ups = frozenset({"registry.lab", "docker.io"})
        assert is_rewritten("registry.lab/faas/hello", None, ups)
        assert is_rewritten("docker.io/library/python", None, ups)
        assert not is_rewritten("faas/hello", None, ups)
        assert not is_rewritten("faas/hello", "registry.lab", ups)

    def test_rewrite_keeps_the_config_and_other_fields(self) -> None:
        img = image_with({"hello.txt": b"hi\n"})
        first = img.layers[0].digest
        new = {"mediaType": ZSTD_TYPE, "digest": "sha256:" + "a" * 64, "size": 7}
        doc = json.loads(rewrite_layers(img.bytes, {first: new}))
        assert doc["config"] == json.loads(img.bytes)["config"]
        assert doc["layers"][0] == new and doc["layers"][1] == json.loads(img.bytes)["layers"][1]


class CorruptingRecode:
    """A recoder whose output is damaged after it hashed it (a disk or encoder fault)."""

    def __call__(self, src: BinaryIO, dst: BinaryIO, encoding: str, level: int) -> Recoded:
        buffer = io.BytesIO()
        result = recode(src, buffer, encoding=encoding, level=level)
        data = bytearray(buffer.getvalue())
        data[len(data) // 2] ^= 0xFF
        dst.write(bytes(data))
        return Recoded(
            digest="sha256:" + hashlib.sha256(data).hexdigest(),
            size=len(data),
            media_type=result.media_type,
            diff_id=result.diff_id,
            source_size=result.source_size,
            cpu_s=result.cpu_s,
        )


class TestTranscoder:
    def test_variant_has_verified_zstd_layers_and_the_same_config(self, store: Store) -> None:
        """Each gzip layer gets a zstd blob linked to its source whose decoded tar is the diff_id;
        the variant manifest keeps the config (same image ID) and is served for tag pulls."""
        img = image_with({"hello.txt": b"hello zstd\n"})
        tc = Transcoder(store, TranscodeConfig())
        variant = tc.derive(stored(store, img))
        assert variant is not None and variant != img.digest
        body, info = store.read_bytes(variant)
        doc = json.loads(body)
        assert (info.media_type, doc["config"]) == (OCI_MANIFEST, json.loads(img.bytes)["config"])
        for layer, new in zip(img.layers, doc["layers"], strict=True):
            assert new["mediaType"] == ZSTD_TYPE
            assert tc.index.source_of(new["digest"]) == layer.digest
            data, _ = store.read_bytes(new["digest"])
            tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
            assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.diff_id
        assert set(store.children(variant)) == {img.config.digest, *(d["digest"] for d in doc["layers"])}
        original = ManifestResult(img.bytes, OCI_MANIFEST, img.digest, "hit")
        served = tc.variant(original, ctx())
        assert (served.digest, served.body) == (variant, body)
        pinned = tc.variant(original, ctx(by_digest=True))
        assert pinned is original
        assert tc.derive(img.digest) == variant and tc.stats.layers == 2  # not done twice

    def test_a_layer_whose_diff_id_does_not_match_stays_gzip_with_a_log_line(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The config names another tar: no derived blob, no variant, a warning, no retry."""
        good = oci.layer({"hello.txt": b"x\n"})
        img = oci.image([oci.Layer(good.bytes, WRONG_DIFF_ID)], cmd=["/bin/true"])
        tc = Transcoder(store, TranscodeConfig())
        before = store.usage()
        with caplog.at_level(logging.WARNING, logger="nic_cache.transcoder"):
            assert tc.derive(stored(store, img)) is None
        assert f"layer {good.digest} left as it is" in caplog.text and WRONG_DIFF_ID in caplog.text
        assert store.usage()[1] == before[1] + 3  # manifest, config, layer: nothing derived
        assert tc.index.get(good.digest, "zstd").digest is None  # type: ignore[union-attr]
        assert tc.derive(img.digest) is None and tc.stats.layers == 1
        original = ManifestResult(img.bytes, OCI_MANIFEST, img.digest, "hit")
        assert tc.variant(original, ctx()) is original

    def test_a_corrupted_derived_blob_is_never_stored_or_served(self, store: Store) -> None:
        """The derived file is decoded again before it is kept: damage after hashing is caught."""
        img = image_with({"hello.txt": b"fragile\n"})
        tc = Transcoder(store, TranscodeConfig(), recode_fn=CorruptingRecode())
        blobs_before = store.usage()[1]
        assert tc.derive(stored(store, img)) is None
        assert store.usage()[1] == blobs_before + len(img.blob_digests) + 1
        assert not any(n.startswith("derive-") for n in os.listdir(store.tmp_dir))
        original = ManifestResult(img.bytes, OCI_MANIFEST, img.digest, "hit")
        assert tc.variant(original, ctx()) is original

    def test_eviction_takes_derived_blobs_first_and_their_source_takes_them_along(self, store: Store) -> None:
        """Over capacity, derived blobs go before any original (even recently used ones);
        deleting a source deletes what was derived from it."""
        img = image_with({"hello.txt": b"evict me\n"})
        tc = Transcoder(store, TranscodeConfig())
        variant = tc.derive(stored(store, img))
        assert variant is not None
        derived = [d["digest"] for d in json.loads(store.read_bytes(variant)[0])["layers"]]
        for digest in derived:
            store.touch(digest)
        store.capacity, store.low_watermark = store.usage()[0] - 1, 1.0
        gone = store.evict()
        assert gone and set(gone) <= {*derived, variant}
        assert all(store.stat(d) is not None for d in (img.digest, *img.blob_digests))
        store.capacity = 0
        kept = [d for d in derived if d not in gone]
        source = next(layer.digest for layer in img.layers if tc.index.get(layer.digest, "zstd"))
        derived_of_source = tc.index.get(source, "zstd").digest  # type: ignore[union-attr]
        store.delete_blob(source)
        assert tc.index.get(source, "zstd") is None and store.stat(derived_of_source) is None  # type: ignore[arg-type]
        assert kept is not None


# ---------------------------------------------------------------- real clients through a cache


@pytest.fixture
def zcache(cache_factory: Callable[..., Cache]) -> Cache:
    """A cache with transcoding on (zstd level 3)."""
    return cache_factory(default_upstream=LAB, extra={"transcode": {"encoding": "zstd", "wait": "30s"}})


def manifest_digest(cache: Cache, path: str, ua: str, ref: str) -> str:
    resp = requests.get(
        f"{cache.url}/v2/{path}/manifests/{ref}",
        headers={"User-Agent": ua, "Accept": OCI_MANIFEST},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.headers["Docker-Content-Digest"]


def wait_variant(cache: Cache, path: str, tag: str, original: str, timeout: float = 60) -> str:
    """Ask like containerd until the tag is answered with a variant; its digest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        digest = manifest_digest(cache, path, CONTAINERD_UA, tag)
        if digest != original:
            return digest
        time.sleep(0.1)
    raise AssertionError(f"no variant of {path}:{tag} within {timeout}s")


@pytest.mark.integration
class TestThroughTheCache:
    def test_containerd_gets_the_original_first_then_zstd_and_runs_it(
        self, zcache: Cache, seeded: Seeded, containerd_factory: Callable[..., Containerd]
    ) -> None:
        """First pull: gzip while the NIC transcodes; later pull: the zstd variant, same image ID,
        and the container runs. Digest-pinned and mirror-form pulls keep the original."""
        img = image_with({"hello.txt": b"served as zstd\n"})
        oci.publish(img, seeded.ref("lab/zbox:1"))
        ref = f"{zcache.host}/{LAB}/lab/zbox:1"
        first = containerd_factory()
        first.pull(ref)
        assert first.image_digest(ref) == img.digest
        variant = wait_variant(zcache, f"{LAB}/lab/zbox", "1", img.digest)
        second = containerd_factory()
        second.pull(ref)
        assert second.image_digest(ref) == variant
        manifest = json.loads(second.ctr("content", "get", variant).stdout)
        assert manifest["config"]["digest"] == img.config.digest  # same image ID
        assert all(layer["mediaType"] == ZSTD_TYPE for layer in manifest["layers"])
        out = second.ctr("run", "--rm", ref, "zbox-run", "/bin/busybox", "cat", "/hello.txt").stdout
        assert out == "served as zstd\n"
        assert manifest_digest(zcache, f"{LAB}/lab/zbox", CONTAINERD_UA, img.digest) == img.digest
        mirror = requests.get(
            f"{zcache.url}/v2/lab/zbox/manifests/1",
            params={"ns": LAB},
            headers={"User-Agent": CONTAINERD_UA, "Accept": OCI_MANIFEST},
            timeout=10,
        )
        assert mirror.headers["Docker-Content-Digest"] == img.digest
        assert manifest_digest(zcache, f"{LAB}/lab/zbox", "skopeo/1.9", "1") == img.digest

    def test_docker_pulls_and_runs_what_it_can_read(
        self, zcache: Cache, seeded: Seeded, dockerd_factory: Callable[..., Dockerd]
    ) -> None:
        """Docker 20.10 cannot unpack zstd (it fails on the variant, asked for by digest), so its
        tag pull through the rewritten reference gets the gzip original, which runs."""
        img = image_with({"hello.txt": b"docker gets gzip\n"})
        oci.publish(img, seeded.ref("lab/dbox:1"))
        url = f"{zcache.url}/api/v1/prefetch"
        requests.post(
            url, json={"image": f"{LAB}/lab/dbox:1"}, headers=zcache.auth, timeout=30
        ).raise_for_status()
        variant = wait_variant(zcache, f"{LAB}/lab/dbox", "1", img.digest)
        client = dockerd_factory().client()
        repo = f"{zcache.host}/{LAB}/lab/dbox"

        def pull_errors(tag: str) -> list[str]:
            events = client.api.pull(repo, tag=tag, stream=True, decode=True)
            return [str(e["error"]) for e in events if e.get("error")]

        assert any("invalid tar header" in e for e in pull_errors(variant))
        assert manifest_digest(zcache, f"{LAB}/lab/dbox", DOCKER_UA, "1") == img.digest
        assert pull_errors("1") == []
        pulled = client.images.get(f"{repo}:1")
        assert pulled.id == img.config.digest
        assert f"{repo}@{img.digest}" in pulled.attrs["RepoDigests"]
        assert client.containers.run(pulled.id, remove=True, network_mode="none") == b"docker gets gzip\n"

    def test_a_function_opt_out_keeps_the_image_as_pushed(self, zcache: Cache, seeded: Seeded) -> None:
        """A prefetch with "transcode": false (the hook saw the annotation) makes no variant."""
        img = image_with({"hello.txt": b"as pushed\n"})
        oci.publish(img, seeded.ref("lab/plain:1"))
        resp = requests.post(
            f"{zcache.url}/api/v1/prefetch",
            json={"image": f"{LAB}/lab/plain:1", "transcode": False},
            headers=zcache.auth,
            timeout=30,
        )
        assert resp.json()["state"] == "done"
        for _ in range(3):
            assert manifest_digest(zcache, f"{LAB}/lab/plain", CONTAINERD_UA, "1") == img.digest
        assert zcache.metric("nic_cache_transcoded_layers_total") == 0
