"""Tests for nic_cache.manifest: what manifests reference, platform selection, Accept headers."""

from __future__ import annotations

import json

import pytest

from nic_cache.errors import ManifestInvalid
from nic_cache.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ParsedManifest,
    accepts,
    parse_manifest,
    platform_matches,
    select_platforms,
)

CONFIG = "sha256:" + "c" * 64
LAYER1 = "sha256:" + "1" * 64
LAYER2 = "sha256:" + "2" * 64
AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
ARMV7 = "sha256:" + "7" * 64
ATTEST = "sha256:" + "e" * 64
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def image_doc(media_type: str | None = OCI_MANIFEST) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "config": {"mediaType": CONFIG_TYPE, "digest": CONFIG, "size": 123},
        "layers": [
            {"mediaType": LAYER_TYPE, "digest": LAYER1, "size": 1000},
            {"mediaType": LAYER_TYPE, "digest": LAYER2, "size": 2000},
        ],
    }
    if media_type is not None:
        doc["mediaType"] = media_type
    return doc


def index_doc(media_type: str | None = OCI_INDEX) -> dict[str, object]:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": AMD64,
                "size": 500,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": ARM64,
                "size": 501,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": ARMV7,
                "size": 502,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
            {"mediaType": OCI_MANIFEST, "digest": ATTEST, "size": 503},
        ],
    }
    if media_type is not None:
        doc["mediaType"] = media_type
    return doc


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


class TestParseManifest:
    @pytest.mark.parametrize(
        ("doc", "header", "media_type"),
        [
            (image_doc(OCI_MANIFEST), None, OCI_MANIFEST),
            (image_doc(DOCKER_MANIFEST), None, DOCKER_MANIFEST),
            (image_doc(None), DOCKER_MANIFEST, DOCKER_MANIFEST),
            (image_doc(None), None, OCI_MANIFEST),
            (image_doc(None), "text/plain", OCI_MANIFEST),
            (image_doc(DOCKER_MANIFEST), OCI_MANIFEST, DOCKER_MANIFEST),
        ],
        ids=["oci", "docker", "type-from-header", "type-inferred", "bogus-header", "body-beats-header"],
    )
    def test_image_manifest(self, doc: dict[str, object], header: str | None, media_type: str) -> None:
        """An image manifest's children are its config then its layers, in order."""
        parsed = parse_manifest(body(doc), header)
        assert parsed.media_type == media_type
        assert not parsed.is_index
        assert parsed.children == (
            Descriptor(CONFIG, CONFIG_TYPE, 123),
            Descriptor(LAYER1, LAYER_TYPE, 1000),
            Descriptor(LAYER2, LAYER_TYPE, 2000),
        )
        assert parsed.blobs == parsed.children

    @pytest.mark.parametrize(
        ("doc", "header", "media_type"),
        [
            (index_doc(OCI_INDEX), None, OCI_INDEX),
            (index_doc(DOCKER_LIST), None, DOCKER_LIST),
            (index_doc(None), DOCKER_LIST, DOCKER_LIST),
            (index_doc(None), None, OCI_INDEX),
        ],
        ids=["oci", "docker", "type-from-header", "type-inferred"],
    )
    def test_index(self, doc: dict[str, object], header: str | None, media_type: str) -> None:
        """An index's children are manifests with their platform as os/arch[/variant]; it has no blobs."""
        parsed = parse_manifest(body(doc), header)
        assert parsed.media_type == media_type
        assert parsed.is_index
        assert [(d.digest, d.platform, d.size) for d in parsed.children] == [
            (AMD64, "linux/amd64", 500),
            (ARM64, "linux/arm64/v8", 501),
            (ARMV7, "linux/arm/v7", 502),
            (ATTEST, None, 503),
        ]
        assert parsed.blobs == ()

    def test_descriptor_without_size_or_type(self) -> None:
        """A descriptor lacking size and mediaType keeps None for both."""
        doc = {"mediaType": OCI_MANIFEST, "layers": [{"digest": LAYER1}]}
        assert parse_manifest(body(doc)).children == (Descriptor(LAYER1, None, None),)

    def test_manifest_without_config(self) -> None:
        """An artifact manifest with layers but no config lists just the layers."""
        doc = {"mediaType": OCI_MANIFEST, "layers": [{"digest": LAYER1, "size": 1}]}
        assert [d.digest for d in parse_manifest(body(doc)).children] == [LAYER1]

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"not json", "not JSON"),
            (b"\xff\xfe", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (body({"schemaVersion": 1, "fsLayers": []}), "unsupported manifest type"),
            (body({"mediaType": "text/plain"}), "unsupported manifest type"),
            (body({"mediaType": OCI_MANIFEST, "layers": [{"size": 1}]}), "malformed descriptor"),
            (body({"mediaType": OCI_MANIFEST, "layers": ["sha256:x"]}), "malformed descriptor"),
            (body({"mediaType": OCI_MANIFEST, "layers": None}), "malformed descriptor"),
            (body({"mediaType": OCI_INDEX, "manifests": [None]}), "malformed descriptor"),
            (body({"mediaType": OCI_MANIFEST, "config": "x", "layers": []}), "malformed descriptor"),
        ],
        ids=[
            "not-json",
            "not-utf8",
            "array",
            "schema1",
            "unknown-type",
            "no-digest",
            "string-layer",
            "null-layers",
            "null-entry",
            "string-config",
        ],
    )
    def test_invalid(self, raw: bytes, message: str) -> None:
        """Anything that is not a schema-2 manifest or index is ManifestInvalid saying why."""
        with pytest.raises(ManifestInvalid, match=message):
            parse_manifest(raw)

    @pytest.mark.parametrize("digest", ["not-a-digest", f"sha512:{'a' * 128}"], ids=["garbage", "sha512"])
    def test_bad_child_digest_is_manifest_invalid(self, digest: str) -> None:
        """A descriptor with an unusable digest makes the manifest ManifestInvalid, as documented."""
        doc = {"mediaType": OCI_MANIFEST, "layers": [{"digest": digest, "size": 1}]}
        with pytest.raises(ManifestInvalid):
            parse_manifest(body(doc))


class TestPlatforms:
    @pytest.mark.parametrize(
        ("have", "want", "match"),
        [
            ("linux/amd64", "linux/amd64", True),
            ("linux/arm64/v8", "linux/arm64", True),
            ("linux/arm64/v8", "linux/arm64/v8", True),
            ("linux/arm/v7", "linux/arm/v6", False),
            ("linux/arm64", "linux/arm64/v8", False),
            ("linux/amd64", "linux/arm64", False),
            ("windows/amd64", "linux/amd64", False),
            (None, "linux/amd64", False),
        ],
        ids=[
            "exact",
            "variant-not-wanted",
            "variant-exact",
            "variant-differs",
            "variant-missing",
            "arch-differs",
            "os-differs",
            "no-platform",
        ],
    )
    def test_platform_matches(self, have: str | None, want: str, match: bool) -> None:
        """os and arch must match; a wanted variant must be present and equal."""
        assert platform_matches(have, want) is match

    @pytest.mark.parametrize(
        ("platforms", "digests"),
        [
            (("linux/amd64",), [AMD64]),
            (("linux/arm64",), [ARM64]),
            (("linux/amd64", "linux/arm/v7"), [AMD64, ARMV7]),
            (("linux/s390x",), []),
            ((), [AMD64, ARM64, ARMV7, ATTEST]),
        ],
        ids=["amd64", "arm64-any-variant", "two", "none-match", "all"],
    )
    def test_select_platforms(self, platforms: tuple[str, ...], digests: list[str]) -> None:
        """Index entries matching any wanted platform are kept in index order; no wish keeps all."""
        parsed = parse_manifest(body(index_doc()))
        assert [d.digest for d in select_platforms(parsed, platforms)] == digests

    def test_select_on_image_manifest_selects_nothing(self) -> None:
        """An image manifest has no platforms, so filtering selects nothing from it."""
        parsed = ParsedManifest(OCI_MANIFEST, False, (Descriptor(LAYER1, None, None),))
        assert select_platforms(parsed, ("linux/amd64",)) == []


class TestAccepts:
    @pytest.mark.parametrize(
        ("header", "media_type", "ok"),
        [
            (None, OCI_INDEX, True),
            ("", OCI_INDEX, True),
            (OCI_INDEX, OCI_INDEX, True),
            (f"{DOCKER_MANIFEST}, {OCI_INDEX};q=0.5", OCI_INDEX, True),
            ("*/*", DOCKER_LIST, True),
            ("application/*", DOCKER_LIST, True),
            (f"{DOCKER_MANIFEST},{OCI_MANIFEST}", OCI_INDEX, False),
            ("text/html", OCI_MANIFEST, False),
        ],
        ids=[
            "none",
            "empty",
            "exact",
            "list-with-params",
            "wildcard",
            "application-wildcard",
            "index-not-accepted",
            "other",
        ],
    )
    def test_accepts(self, header: str | None, media_type: str, ok: bool) -> None:
        """The Accept header admits a type it lists (parameters ignored) or a wildcard."""
        assert accepts(header, media_type) is ok
