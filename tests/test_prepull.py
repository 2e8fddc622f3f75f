"""Prepull without a runtime: the pure choice, one round against a fake NIC (a real HTTP
server on loopback) with a fake runtime, the round loop and the command line's errors."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner

from faas_accel.cacheapi import CachedImage, PopularImage
from faas_accel.cli import main
from faas_accel.prepull.prepuller import (
    Prepuller,
    PrepullError,
    PrepullResult,
    candidates,
    ctr_digests,
    docker_digests,
    serve,
)
from nic_cache.policy.hold import Candidate, choose, missing
from tests.support.jsonserver import serving

MB = 1_000_000
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
OLD = "sha256:" + "0" * 64
MIRROR = "mirror.local:5000"
ONCE = ["prepull", "once", "--cache", "http://127.0.0.1:9", "--mirror-host", "h:1", "--address", "/nope"]


def c(image: str, size: int = MB, *, complete: bool = True, score: float = 0.0) -> Candidate:
    return Candidate(image, D1, size, complete, score)


def images(choice: list[Candidate]) -> list[str]:
    return [c.image for c in choice]


def entry(image: str, digest: str = D1, *, known: int = 3, stored: int = 3, at: float = 0) -> dict[str, Any]:
    """One item of `GET /api/v1/images` as the NIC answers it."""
    return {
        "image": image,
        "digest": digest,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "fetched_at": at,
        "blobs_known": known,
        "blobs_stored": stored,
        "bytes_stored": 5 * stored,
        "pinned": False,
        "complete": known > 0 and known == stored,
    }


class TestChoose:
    def test_most_popular_first_up_to_the_limit(self) -> None:
        pool = [c("r/a:1", score=1), c("r/b:1", score=5), c("r/c:1", score=3)]
        assert images(choose(pool, limit=2)) == ["r/b:1", "r/c:1"]

    def test_incomplete_images_are_never_chosen(self) -> None:
        """A VM pulls only what the NIC holds whole: anything else would cross the WAN."""
        pool = [c("r/a:1", complete=False, score=9), c("r/b:1", score=1)]
        assert images(choose(pool, limit=5)) == ["r/b:1"]

    def test_budget_skips_what_does_not_fit_and_keeps_going(self) -> None:
        pool = [
            c("r/big:1", 900 * MB, score=9),
            c("r/a:1", 300 * MB, score=5),
            c("r/b:1", 600 * MB, score=4),
            c("r/c:1", 100 * MB, score=1),
        ]
        assert images(choose(pool, limit=10, budget=1000 * MB)) == ["r/big:1", "r/c:1"]
        assert images(choose(pool, limit=10, budget=0)) == ["r/big:1", "r/a:1", "r/b:1", "r/c:1"]

    def test_only_restricts_to_the_listed_images(self) -> None:
        pool = [c("r/a:1", score=5), c("r/b:1", score=1)]
        assert images(choose(pool, limit=5, only=["r/b:1", "r/zzz:1"])) == ["r/b:1"]

    def test_equal_scores_keep_the_nic_order(self) -> None:
        pool = [c("r/x:1"), c("r/y:1"), c("r/z:1")]
        assert images(choose(pool, limit=2)) == ["r/x:1", "r/y:1"]


class TestMissing:
    @pytest.mark.parametrize(
        ("only", "expected"),
        [
            ((), []),
            (("r/a:1",), []),
            (("r/half:1",), ["r/half:1"]),
            (("r/zzz:1", "r/a:1", "r/half:1", "r/zzz:1"), ["r/zzz:1", "r/half:1"]),
        ],
        ids=["nothing-requested", "complete", "incomplete", "unlisted-and-incomplete-once-each"],
    )
    def test_requested_images_the_nic_lacks_whole(self, only: tuple[str, ...], expected: list[str]) -> None:
        """Requested images the NIC lists incomplete or not at all are missing, in request order."""
        pool = [c("r/a:1"), c("r/half:1", complete=False)]
        assert missing(pool, only) == expected


def listed(doc: dict[str, Any]) -> list[CachedImage]:
    return [CachedImage.from_doc(i) for i in doc["images"]]


def ranked(doc: dict[str, Any]) -> list[PopularImage]:
    return [PopularImage.from_doc(i) for i in doc.get("images", [])]


class TestCandidates:
    def test_joins_images_and_popularity(self) -> None:
        doc = {
            "images": [
                entry("r/old:1", D1, at=10),
                entry("r/new:1", D2, known=3, stored=2, at=20),
                entry("r/none:1", D2, known=0, stored=0, at=30),
            ]
        }
        popular = {"images": [{"image": "r/old:1", "score": 2.5}]}
        # newest first: equal scores prefer what the NIC fetched last
        assert candidates(listed(doc), ranked(popular)) == [
            Candidate("r/none:1", D2, 0, False, 0.0),
            Candidate("r/new:1", D2, 10, False, 0.0),
            Candidate("r/old:1", D1, 15, True, 2.5),
        ]

    def test_an_image_without_a_digest_is_not_complete(self) -> None:
        """Without a digest there is nothing to pull by digest, so the image is never chosen."""
        doc = {"images": [{**entry("r/a:1"), "digest": None}]}
        assert candidates(listed(doc), []) == [Candidate("r/a:1", "", 15, False, 0.0)]

    @pytest.mark.parametrize(
        "doc",
        [
            {"images": [{"digest": D1}]},
            {"images": ["r/a:1"]},
            {"images": [{"image": "r/a:1", "blobs_known": "x"}]},
        ],
        ids=["no-image", "not-an-object", "not-a-number"],
    )
    def test_a_malformed_document_is_a_prepull_error(
        self, nic: FakeNic, make: Any, doc: dict[str, Any]
    ) -> None:
        nic.docs["/api/v1/images"] = doc
        with pytest.raises(PrepullError, match="admin API"):
            make(FakeRuntime()).once()


class TestRuntimeListings:
    def test_ctr_images_ls(self) -> None:
        """Name -> target digest, whatever spaces the SIZE column holds."""
        listing = (
            "REF                        TYPE                                       DIGEST SIZE      "
            "PLATFORMS   LABELS\n"
            f"h:1/r/a:1 application/vnd.oci.image.manifest.v1+json {D1} 2.1 MiB linux/amd64 -\n"
            f"h:1/r/b@{D2} application/vnd.oci.image.index.v1+json {D2} 772.8 KiB linux/amd64,linux/arm64 -\n"
        )
        assert ctr_digests(listing) == {"h:1/r/a:1": {D1}, f"h:1/r/b@{D2}": {D2}}

    def test_docker_images_json(self) -> None:
        """A tag's digests are its image's repo digests in the same repository only."""
        listing: list[dict[str, Any]] = [
            {
                "RepoTags": ["h:1/r/a:1", "other/a:9"],
                "RepoDigests": [f"h:1/r/a@{D1}", f"h:1/r/a@{D2}", f"elsewhere/a@{OLD}"],
            },
            {"RepoTags": ["h:1/r/b:1"], "RepoDigests": None},
            {"RepoTags": None, "RepoDigests": [f"h:1/r/c@{OLD}"]},
        ]
        assert docker_digests(listing) == {"h:1/r/a:1": {D1, D2}, "other/a:9": set(), "h:1/r/b:1": set()}


@dataclass
class FakeNic:
    """What the fake NIC serves (path -> JSON document, or raw bytes) and what it was asked."""

    url: str = ""
    docs: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    seen: list[tuple[str, str | None]] = field(default_factory=list)


@pytest.fixture
def nic() -> Iterator[FakeNic]:
    """A NIC admin API on 127.0.0.1 serving `docs`; empty lists unless told otherwise."""
    state = FakeNic()

    def answer(method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        path = path.partition("?")[0]
        state.seen.append((path, headers.get("Authorization")))
        doc = state.docs.get(path, {"images": []})
        return state.status, doc if isinstance(doc, bytes) else json.dumps(doc).encode()

    with serving(answer) as state.url:
        yield state


class FakeRuntime:
    """Local images as name -> digests; a pull names the by-digest image, like the real ones."""

    def __init__(self, local: dict[str, set[str]] | None = None, fail: set[str] | None = None) -> None:
        self.local = dict(local or {})
        self.fail = fail or set()
        self.pulls: list[tuple[str, str]] = []
        self.asked = 0

    def digests(self) -> dict[str, set[str]]:
        self.asked += 1
        return {name: set(digests) for name, digests in self.local.items()}

    def pull(self, source: str, name: str) -> None:
        self.pulls.append((source, name))
        if source in self.fail:
            raise PrepullError(f"pull of {source}: no")
        self.local[name] = {source.partition("@")[2]}


@pytest.fixture
def make(nic: FakeNic) -> Iterator[Any]:
    """`make(runtime, **kw) -> Prepuller` against the fake NIC; closed after the test."""
    made: list[Prepuller] = []

    def build(runtime: FakeRuntime, **kw: Any) -> Prepuller:
        p = Prepuller(nic.url, kw.pop("token", None), MIRROR, runtime, **kw)
        made.append(p)
        return p

    yield build
    for p in made:
        p.close()


def mirror(image: str) -> str:
    return f"{MIRROR}/{image}"


class TestOnce:
    def test_pulls_by_digest_and_names_the_mirror_tag(self, nic: FakeNic, make: Any) -> None:
        """The NIC is asked for the digest it holds (never the tag), named as the hook rewrites."""
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/a:1", D1)]}
        runtime = FakeRuntime()
        result = make(runtime).once()
        assert runtime.pulls == [(mirror(f"r.io/lab/a@{D1}"), mirror("r.io/lab/a:1"))]
        assert (result.pulled, result.present, result.failed, result.missing) == (
            ["r.io/lab/a:1"],
            [],
            {},
            [],
        )

    @pytest.mark.parametrize(
        ("local", "pulled"),
        [({D1}, False), ({OLD}, True), ({OLD, D1}, False), (set(), True)],
        ids=["same-digest", "older-digest", "known-by-both", "no-digest"],
    )
    def test_present_means_the_nics_digest_under_the_mirror_tag(
        self, nic: FakeNic, make: Any, local: set[str], pulled: bool
    ) -> None:
        """A VM holding an older digest under the mirror tag gets the NIC's."""
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/a:1", D1)]}
        runtime = FakeRuntime({mirror("r.io/lab/a:1"): local})
        result = make(runtime).once()
        assert (result.pulled, result.present) == (
            (["r.io/lab/a:1"], []) if pulled else ([], ["r.io/lab/a:1"])
        )
        assert runtime.local[mirror("r.io/lab/a:1")] >= {D1}

    def test_a_requested_image_the_nic_lacks_is_missing_and_not_pulled(self, nic: FakeNic, make: Any) -> None:
        """Incomplete or unlisted requested images are reported, and the runtime is not even asked."""
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/half:1", known=3, stored=1)]}
        runtime = FakeRuntime()
        result = make(runtime, only=["r.io/lab/half:1", "r.io/lab/zzz"]).once()
        assert result.missing == ["r.io/lab/half:1", "r.io/lab/zzz:latest"]
        assert (result.pulled, result.failed, runtime.pulls, runtime.asked) == ([], {}, [], 0)

    def test_a_failed_pull_is_reported_and_the_rest_go_on(self, nic: FakeNic, make: Any) -> None:
        nic.docs["/api/v1/images"] = {
            "images": [entry("r.io/lab/a:1", D1, at=2), entry("r.io/lab/b:1", D2, at=1)]
        }
        runtime = FakeRuntime(fail={mirror(f"r.io/lab/a@{D1}")})
        result = make(runtime).once()
        assert result.pulled == ["r.io/lab/b:1"] and list(result.failed) == ["r.io/lab/a:1"]
        assert "no" in result.failed["r.io/lab/a:1"]

    @pytest.mark.parametrize(
        ("image", "digest", "why"),
        [("r.io/lab/a:1", "sha512:" + "1" * 128, "sha256"), ("127.0.0.1:5000/lab/a:1", D1, "port")],
        ids=["not-sha256", "registry-with-port"],
    )
    def test_what_cannot_be_pulled_by_digest_from_the_mirror_fails(
        self, nic: FakeNic, make: Any, image: str, digest: str, why: str
    ) -> None:
        nic.docs["/api/v1/images"] = {"images": [entry(image, digest)]}
        runtime = FakeRuntime()
        result = make(runtime).once()
        assert runtime.pulls == [] and why in result.failed[image]

    def test_popularity_orders_the_pulls(self, nic: FakeNic, make: Any) -> None:
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/a:1", at=2), entry("r.io/lab/b:1", at=1)]}
        nic.docs["/api/v1/popular"] = {"images": [{"image": "r.io/lab/b:1", "score": 3}]}
        runtime = FakeRuntime()
        assert make(runtime, limit=1).once().pulled == ["r.io/lab/b:1"]

    def test_the_token_is_sent(self, nic: FakeNic, make: Any) -> None:
        make(FakeRuntime(), token="s3cret").once()
        assert {auth for _, auth in nic.seen} == {"Bearer s3cret"}

    @pytest.mark.parametrize(
        ("status", "body", "message"),
        [
            (200, b"<html>not json</html>", "not JSON"),
            (200, b"[1, 2]", "JSON object"),
            (401, b'{"errors": []}', "NIC_CACHE_ADMIN_TOKEN"),
            (500, b"oops", "HTTP 500"),
        ],
        ids=["not-json", "not-an-object", "unauthorized", "server-error"],
    )
    def test_a_bad_answer_from_the_nic_is_a_prepull_error(
        self, nic: FakeNic, make: Any, status: int, body: bytes, message: str
    ) -> None:
        nic.status, nic.docs["/api/v1/images"] = status, body
        with pytest.raises(PrepullError, match=message):
            make(FakeRuntime()).once()


class TestServe:
    def test_a_failing_round_is_logged_and_the_loop_goes_on(self, caplog: pytest.LogCaptureFixture) -> None:
        """Neither a PrepullError nor an unexpected exception ends the daemon."""
        stop = threading.Event()
        rounds: list[int] = []

        def once() -> PrepullResult:
            rounds.append(1)
            if len(rounds) == 1:
                raise KeyError("a bug")
            if len(rounds) == 2:
                raise PrepullError("NIC down")
            stop.set()
            return PrepullResult(["r/a:1"], [], {}, ["r/b:1"], 0.5)

        with caplog.at_level(logging.INFO, logger="faas_accel.prepull"):
            serve(once, 0, stop)
        assert len(rounds) == 3
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0] == "round crashed" and caplog.records[0].exc_info is not None
        assert messages[1:] == [
            "round failed: NIC down",
            "round: 1 pulled, 0 present, 0 failed, 1 missing in 0.5 s",
            "not complete on the NIC, not pulled: r/b:1",
        ]


class TestCli:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--budget", "lots"], "--budget"),
            (["--limit", "0"], "--limit"),
            (["--runtime", "podman"], "--runtime"),
            (["--image", "Not/Valid:1"], "--image"),
            (["--image", "r.io/a:bad tag"], "--image"),
            (["--image", "127.0.0.1:5000/lab/a:1"], "port"),
            (["--image", f"r.io/lab/a:1@{D1}"], "not a digest"),
            (["--mirror-host", "http://h:1"], "--mirror-host"),
        ],
        ids=["budget", "limit", "runtime", "image-name", "image-tag", "image-port", "image-digest", "mirror"],
    )
    def test_bad_options_are_readable(self, args: list[str], message: str) -> None:
        """Refused before the NIC is asked (it is unreachable here), without a traceback."""
        result = CliRunner().invoke(main, [*ONCE, *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output

    def test_unreachable_cache_is_a_clean_error(self) -> None:
        result = CliRunner().invoke(main, ONCE)
        assert result.exit_code == 1 and "cannot reach the NIC cache" in result.output

    def test_the_token_comes_from_the_environment(self, nic: FakeNic) -> None:
        result = CliRunner().invoke(main, once_at(nic), env={"NIC_CACHE_ADMIN_TOKEN": "from-env"})
        assert result.exit_code == 0, result.output
        assert {auth for _, auth in nic.seen} == {"Bearer from-env"}

    def test_once_fails_when_a_requested_image_is_not_on_the_nic(self, nic: FakeNic) -> None:
        """The JSON report still goes to stdout; the reason to stderr; exit status 1."""
        nic.docs["/api/v1/images"] = {"images": [entry("docker.io/library/python:3.12", known=4, stored=2)]}
        result = CliRunner().invoke(main, [*once_at(nic), "--image", "python:3.12"])
        assert result.exit_code == 1
        assert json.loads(result.stdout)["missing"] == ["docker.io/library/python:3.12"]
        assert "not complete on the NIC, not pulled: docker.io/library/python:3.12" in result.stderr

    def test_an_unreachable_docker_is_a_clean_error(self, nic: FakeNic, tmp_path: Any) -> None:
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/a:1")]}
        sock = f"unix://{tmp_path}/docker.sock"
        result = CliRunner().invoke(main, [*once_at(nic), "--runtime", "docker", "--address", sock])
        assert result.exit_code == 1 and f"docker at {sock}" in result.stderr, result.output
        assert "Traceback" not in result.output

    def test_an_unusable_docker_address_is_a_clean_error(self, nic: FakeNic) -> None:
        nic.docs["/api/v1/images"] = {"images": [entry("r.io/lab/a:1")]}
        result = CliRunner().invoke(main, [*once_at(nic), "--runtime", "docker", "--address", "/nope"])
        assert result.exit_code == 1 and "docker at /nope" in result.stderr, result.output

    def test_a_non_json_answer_is_a_clean_error(self, nic: FakeNic) -> None:
        nic.docs["/api/v1/images"] = b"<html>"
        result = CliRunner().invoke(main, once_at(nic))
        assert result.exit_code == 1 and "not JSON" in result.stderr
        assert "Traceback" not in result.output


def once_at(nic: FakeNic) -> list[str]:
    return ["prepull", "once", "--cache", nic.url, "--mirror-host", "h:1", "--address", "/nope"]
