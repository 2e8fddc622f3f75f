"""Tests for nic_cache.reference: names, tags, digests, registry paths, routing, image references."""

from __future__ import annotations

import pytest

from nic_cache.errors import DigestInvalid, NameInvalid, NameUnknown, TagInvalid, Unsupported
from nic_cache.reference import (
    ImageRef,
    RegistryPath,
    Route,
    canonical_host,
    digest_hex,
    is_digest,
    parse_image,
    parse_registry_path,
    resolve_route,
    validate_digest,
    validate_name,
    validate_reference,
)

HEX = "a" * 64
DIGEST = f"sha256:{HEX}"
UPSTREAMS = frozenset({"docker.io", "ghcr.io", "registry.lab"})


class TestValidateName:
    @pytest.mark.parametrize(
        "name",
        ["alpine", "library/alpine", "a/b/c/d", "my.org/app", "a_b", "a__b", "a-b", "a---b", "x" * 255],
        ids=["one", "two", "deep", "dot", "underscore", "double-underscore", "dash", "dashes", "max-length"],
    )
    def test_valid(self, name: str) -> None:
        """A name made of lowercase components joined by separators is returned unchanged."""
        assert validate_name(name) == name

    @pytest.mark.parametrize(
        "name",
        ["", "Alpine", "a//b", "/a", "a/", "-a", "a-", "a___b", "a..b", "a:b", "a b", "x" * 256],
        ids=[
            "empty",
            "upper",
            "empty-component",
            "leading-slash",
            "trailing-slash",
            "leading-dash",
            "trailing-dash",
            "triple-underscore",
            "double-dot",
            "colon",
            "space",
            "too-long",
        ],
    )
    def test_invalid(self, name: str) -> None:
        """Anything outside the distribution name grammar is NameInvalid."""
        with pytest.raises(NameInvalid):
            validate_name(name)


class TestDigests:
    def test_valid_sha256(self) -> None:
        """A lowercase 64-hex sha256 digest is returned unchanged and its hex part extracted."""
        assert validate_digest(DIGEST) == DIGEST
        assert digest_hex(DIGEST) == HEX

    @pytest.mark.parametrize(
        ("digest", "message"),
        [
            (f"sha512:{'a' * 128}", "only sha256"),
            ("sha256", "invalid digest"),
            ("", "invalid digest"),
            (f"SHA256:{HEX}", "invalid digest"),
            (f"sha256:{HEX}/x", "malformed digest"),
            ("sha256:deadbeef", "malformed digest 'sha256:deadbeef': a sha256 digest is 'sha256:' and 64"),
            (f"sha256:{HEX.upper()}", "malformed digest"),
        ],
        ids=["sha512", "no-hex", "empty", "upper-algorithm", "slash", "short-hex", "upper-hex"],
    )
    def test_invalid(self, digest: str, message: str) -> None:
        """Digests the cache cannot verify are DigestInvalid, saying why."""
        with pytest.raises(DigestInvalid, match=message):
            validate_digest(digest)

    @pytest.mark.parametrize(
        "digest", [f"sha256:{'a' * 63}", f"sha256:{'A' * 64}"], ids=["short-hex", "upper-hex"]
    )
    def test_malformed_sha256_is_invalid(self, digest: str) -> None:
        """A sha256 digest with a malformed hex part is DigestInvalid."""
        with pytest.raises(DigestInvalid):
            validate_digest(digest)

    def test_digest_hex_validates(self) -> None:
        """digest_hex refuses what validate_digest refuses rather than slicing garbage."""
        with pytest.raises(DigestInvalid):
            digest_hex("sha256:../../etc/passwd")


class TestReferences:
    @pytest.mark.parametrize(
        ("reference", "digest"),
        [("latest", False), ("v1.2.3-rc_1", False), ("_x", False), (DIGEST, True)],
        ids=["latest", "semver", "underscore-first", "digest"],
    )
    def test_valid(self, reference: str, digest: bool) -> None:
        """Tags and sha256 digests are valid manifest references, told apart by the colon."""
        assert validate_reference(reference) == reference
        assert is_digest(reference) is digest

    @pytest.mark.parametrize(
        ("reference", "error"),
        [
            ("", TagInvalid),
            (".x", TagInvalid),
            ("-x", TagInvalid),
            ("a" * 129, TagInvalid),
            ("a/b", TagInvalid),
            ("sha256:zz", DigestInvalid),
        ],
        ids=["empty", "leading-dot", "leading-dash", "too-long", "slash", "bad-digest"],
    )
    def test_invalid(self, reference: str, error: type[Exception]) -> None:
        """Bad tags are TagInvalid and bad digests DigestInvalid."""
        with pytest.raises(error):
            validate_reference(reference)

    def test_tag_length_limit(self) -> None:
        """A tag of exactly 128 characters is the longest accepted."""
        assert validate_reference("a" * 128) == "a" * 128


class TestParseRegistryPath:
    @pytest.mark.parametrize(
        ("rest", "name", "kind", "reference"),
        [
            ("alpine/manifests/latest", "alpine", "manifests", "latest"),
            ("library/alpine/manifests/3.19", "library/alpine", "manifests", "3.19"),
            (f"a/b/blobs/{DIGEST}", "a/b", "blobs", DIGEST),
            ("docker.io/library/alpine/manifests/latest", "docker.io/library/alpine", "manifests", "latest"),
            ("a/b/tags/list", "a/b", "tags", ""),
            ("a/manifests/b/manifests/latest", "a/manifests/b", "manifests", "latest"),
            ("a/blobs/b/blobs/x", "a/blobs/b", "blobs", "x"),
        ],
        ids=["manifest", "nested", "blob", "rewritten", "tags", "manifests-in-name", "blobs-in-name"],
    )
    def test_parses(self, rest: str, name: str, kind: str, reference: str) -> None:
        """The last API keyword splits the repository name from the reference."""
        assert parse_registry_path(rest) == RegistryPath(name, kind, reference)

    @pytest.mark.parametrize(
        "rest",
        ["alpine/blobs/uploads/", "alpine/blobs/uploads/1234", "a/b/blobs/uploads"],
        ids=["start", "continue", "no-slash"],
    )
    def test_push_is_unsupported(self, rest: str) -> None:
        """Upload paths are refused as Unsupported: the mirror is read-only."""
        with pytest.raises(Unsupported):
            parse_registry_path(rest)

    @pytest.mark.parametrize(
        "rest",
        ["", "alpine", "alpine/manifests/", "manifests/latest", "alpine/manifests/a/b", "alpine/other/x"],
        ids=["empty", "name-only", "no-reference", "no-name", "slash-in-reference", "unknown-kind"],
    )
    def test_not_an_api_path(self, rest: str) -> None:
        """Anything else is NameInvalid naming the path."""
        with pytest.raises(NameInvalid, match="not a registry API path"):
            parse_registry_path(rest)


class TestResolveRoute:
    @pytest.mark.parametrize(
        ("name", "ns", "default", "upstream", "repository"),
        [
            ("library/alpine", "docker.io", None, "docker.io", "library/alpine"),
            ("alpine", "docker.io", None, "docker.io", "library/alpine"),
            ("org/app", "ghcr.io", "docker.io", "ghcr.io", "org/app"),
            ("alpine", "index.docker.io", None, "docker.io", "library/alpine"),
            ("docker.io/library/alpine", None, None, "docker.io", "library/alpine"),
            ("docker.io/alpine", None, "ghcr.io", "docker.io", "library/alpine"),
            ("ghcr.io/org/app", None, "docker.io", "ghcr.io", "org/app"),
            ("registry.lab/alpine", None, None, "registry.lab", "alpine"),
            ("registry-1.docker.io/alpine", None, None, "docker.io", "library/alpine"),
            ("alpine", None, "docker.io", "docker.io", "library/alpine"),
            ("org/app", None, "docker.io", "docker.io", "org/app"),
            ("org/app", None, "registry.lab", "registry.lab", "org/app"),
            ("quay.io/org/app", None, "docker.io", "docker.io", "quay.io/org/app"),
            ("ghcr.io/org/app", "docker.io", None, "docker.io", "ghcr.io/org/app"),
        ],
        ids=[
            "ns",
            "ns-library",
            "ns-beats-default",
            "ns-alias",
            "rewritten",
            "rewritten-library",
            "rewritten-beats-default",
            "rewritten-other",
            "rewritten-alias",
            "default-library",
            "default-org",
            "default-not-hub",
            "unconfigured-first-segment",
            "ns-beats-first-segment",
        ],
    )
    def test_routes(
        self, name: str, ns: str | None, default: str | None, upstream: str, repository: str
    ) -> None:
        """?ns= wins, then a configured first segment, then the default; Hub gets library/."""
        route = resolve_route(name, ns=ns, upstreams=UPSTREAMS, default_upstream=default)
        assert route == Route(upstream, repository)

    @pytest.mark.parametrize(
        ("name", "ns", "default", "error", "message"),
        [
            ("alpine", "quay.io", "docker.io", NameUnknown, "no upstream configured for registry 'quay.io'"),
            ("org/app", None, None, NameUnknown, "no default"),
            ("quay.io/org/app", None, None, NameUnknown, "no default"),
            ("docker.io/Alpine", None, None, NameInvalid, "Alpine"),
            ("Alpine", "docker.io", None, NameInvalid, "Alpine"),
        ],
        ids=["unknown-ns", "no-default", "unknown-first-segment", "bad-name-rewritten", "bad-name-ns"],
    )
    def test_refused(
        self, name: str, ns: str | None, default: str | None, error: type[Exception], message: str
    ) -> None:
        """Unroutable requests are NameUnknown and invalid repositories NameInvalid."""
        with pytest.raises(error, match=message):
            resolve_route(name, ns=ns, upstreams=UPSTREAMS, default_upstream=default)

    @pytest.mark.parametrize(
        ("host", "configured", "expected"),
        [
            ("docker.io", {"registry-1.docker.io"}, "registry-1.docker.io"),
            ("index.docker.io", {"docker.io"}, "docker.io"),
            ("ghcr.io", {"docker.io"}, "ghcr.io"),
            ("docker.io", {"ghcr.io"}, "docker.io"),
        ],
        ids=["hub-to-configured-alias", "alias-to-hub", "not-hub", "hub-unconfigured"],
    )
    def test_canonical_host(self, host: str, configured: set[str], expected: str) -> None:
        """Docker Hub's host names map onto whichever one is configured; others are unchanged."""
        assert canonical_host(host, configured) == expected


class TestParseImage:
    @pytest.mark.parametrize(
        ("image", "expected"),
        [
            ("alpine", ("docker.io", "library/alpine", "latest", None)),
            ("python:3.12", ("docker.io", "library/python", "3.12", None)),
            ("user/app", ("docker.io", "user/app", "latest", None)),
            ("docker.io/alpine:3", ("docker.io", "library/alpine", "3", None)),
            ("index.docker.io/user/app", ("docker.io", "user/app", "latest", None)),
            ("registry-1.docker.io/library/alpine", ("docker.io", "library/alpine", "latest", None)),
            ("ghcr.io/org/app:v1", ("ghcr.io", "org/app", "v1", None)),
            ("ghcr.io/app", ("ghcr.io", "app", "latest", None)),
            ("localhost/app", ("localhost", "app", "latest", None)),
            ("localhost:5000/a/b:c", ("localhost:5000", "a/b", "c", None)),
            ("198.18.0.1:5000/lab/hello:1", ("198.18.0.1:5000", "lab/hello", "1", None)),
            ("[fd00::1]:5000/app", ("[fd00::1]:5000", "app", "latest", None)),
            (f"alpine@{DIGEST}", ("docker.io", "library/alpine", None, DIGEST)),
            (f"ghcr.io/a/b:1@{DIGEST}", ("ghcr.io", "a/b", "1", DIGEST)),
        ],
        ids=[
            "bare",
            "tag",
            "hub-user",
            "hub-host",
            "hub-alias",
            "hub-registry-alias",
            "other-host",
            "other-host-one-component",
            "localhost",
            "host-port",
            "ip-port",
            "ipv6",
            "digest",
            "tag-and-digest",
        ],
    )
    def test_normalizes_like_docker(
        self, image: str, expected: tuple[str, str, str | None, str | None]
    ) -> None:
        """References are normalized the way docker does: Hub host, library/ and latest filled in."""
        ref = parse_image(image)
        assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected

    @pytest.mark.parametrize(
        ("image", "error"),
        [
            ("", NameInvalid),
            (" alpine", NameInvalid),
            ("alpine ", NameInvalid),
            ("Alpine", NameInvalid),
            ("alpine:", TagInvalid),
            ("alpine:.bad", TagInvalid),
            ("alpine@sha256:zz", DigestInvalid),
            (f"alpine@md5:{'a' * 32}", DigestInvalid),
            ("a/b:c/d", NameInvalid),
            ("bad_host.io/app", NameInvalid),
            ("ghcr.io/", NameInvalid),
            ("alpine@", (NameInvalid, DigestInvalid)),
            ("alpine:3@", (NameInvalid, DigestInvalid)),
        ],
        ids=[
            "empty",
            "leading-space",
            "trailing-space",
            "upper",
            "empty-tag",
            "bad-tag",
            "bad-digest",
            "md5",
            "colon-mid-path",
            "bad-host",
            "no-repository",
            "empty-digest",
            "tag-empty-digest",
        ],
    )
    def test_invalid(self, image: str, error: type[Exception] | tuple[type[Exception], ...]) -> None:
        """Malformed references raise the error naming the offending part, never a guess."""
        with pytest.raises(error):
            parse_image(image)

    @pytest.mark.parametrize(
        ("ref", "text", "reference"),
        [
            (ImageRef("docker.io", "library/alpine", "3"), "docker.io/library/alpine:3", "3"),
            (ImageRef("ghcr.io", "a/b", None, DIGEST), f"ghcr.io/a/b@{DIGEST}", DIGEST),
            (ImageRef("ghcr.io", "a/b", "1", DIGEST), f"ghcr.io/a/b:1@{DIGEST}", DIGEST),
            (ImageRef("ghcr.io", "a/b"), "ghcr.io/a/b", "latest"),
        ],
        ids=["tag", "digest", "both", "neither"],
    )
    def test_image_ref_text(self, ref: ImageRef, text: str, reference: str) -> None:
        """str() is the full reference and .reference prefers the digest, then the tag, then latest."""
        assert str(ref) == text
        assert ref.reference == reference

    @pytest.mark.parametrize(
        "image",
        ["python:3.12", "ghcr.io/org/app:v1", f"registry.lab/a/b@{DIGEST}"],
        ids=["hub", "ghcr", "digest"],
    )
    def test_mirror_form_round_trips(self, image: str) -> None:
        """The rewritten reference parses back and routes to the original registry and repository."""
        ref = parse_image(image)
        rewritten = parse_image(ref.mirror_form("nic.lab:5000"))
        assert rewritten.registry == "nic.lab:5000"
        route = resolve_route(rewritten.repository, ns=None, upstreams=UPSTREAMS, default_upstream=None)
        assert (route.upstream, route.repository) == (ref.registry, ref.repository)
        assert (rewritten.tag, rewritten.digest) == (ref.tag, ref.digest)

    def test_mirror_form_of_registry_with_port_is_usable(self) -> None:
        """A registry with a port either gets a parsable mirror form or none at all, never a broken one."""
        ref = parse_image("198.18.0.1:5000/lab/hello:1")
        try:
            rewritten = ref.mirror_form("nic.lab:5000")
        except (NameInvalid, ValueError):
            return
        parse_image(rewritten)
