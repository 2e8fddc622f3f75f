"""Tenant isolation through the real cache: a client reads a repository only with its own
credential, and a blob only through a repository that references it.

Upstreams: the seeded public registry (`registry.lab`), a CNCF registry with htpasswd auth
(`basic.lab`), one with token auth and per-repository access lists served by a token server
on the same host (`token.lab`), and one whose token realm is on another host (`far.lab`,
127.0.0.2). The cache has its own credentials ("filler") for each. Clients: skopeo with and
without `--src-creds`, containerd (`ctr --user`), plain HTTP for exact statuses.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from faas_accel.testbed import oci
from faas_accel.testbed.cache import Cache
from faas_accel.testbed.oci import assert_dir_matches, skopeo_copy
from faas_accel.testbed.registry import Registry, htpasswd_auth
from tests.conftest import LAB, Seeded
from tests.support.tokenauth import Acl, TokenServer

pytestmark = pytest.mark.integration
FILLER = ("filler", "fillerpw")
USERS = {"alice": "alicepw", "bob": "bobpw", "filler": "fillerpw", "pusher": "pusherpw"}


@dataclass
class Lab:
    cache: Cache
    basic: Registry
    token: Registry
    tokens: TokenServer
    far_tokens: TokenServer
    basic_private: oci.Image
    token_private: oci.Image
    token_bobs: oci.Image
    token_public: oci.Image
    far_private: oci.Image


def _image(seed: int) -> oci.Image:
    return oci.image([oci.random_layer(300_000, seed=seed), oci.random_layer(200_000, seed=seed + 1)])


@pytest.fixture(scope="module")
def lab(seeded: Seeded) -> Iterator[Lab]:
    """The four upstreams, their images, and one cache in front of them (module-wide)."""
    workdir = Path(tempfile.mkdtemp(prefix="isolation-"))
    closers: list[Callable[[], None]] = []
    try:
        basic = Registry(auth=htpasswd_auth(workdir, USERS)).start()
        closers.append(basic.close)
        basic_private = _image(5101)
        oci.publish(basic_private, f"{basic.host}/lab/private:1", creds="pusher:pusherpw")

        acl = Acl(users={"alice": ("alicepw", {"lab/private"}), "bob": ("bobpw", {"lab/bobs"}),
                         "filler": ("fillerpw", {"lab/private", "lab/bobs", "lab/public"}),
                         "pusher": ("pusherpw", set())},
                  public={"lab/public"}, pusher="pusher")  # fmt: skip
        tokens = TokenServer(acl, workdir)
        closers.append(tokens.close)
        token = Registry(auth=tokens.registry_auth()).start()
        closers.append(token.close)
        images = {name: _image(5200 + 10 * i) for i, name in enumerate(("private", "bobs", "public"))}
        for name, image in images.items():
            oci.publish(image, f"{token.host}/lab/{name}:1", creds="pusher:pusherpw")

        far_dir = workdir / "far"
        far_dir.mkdir()
        far_tokens = TokenServer(Acl(users={"filler": ("fillerpw", {"lab/private"}),
                                            "pusher": ("pusherpw", set())}, pusher="pusher"),
                                 far_dir, host="127.0.0.2")  # fmt: skip
        closers.append(far_tokens.close)
        far = Registry(auth=far_tokens.registry_auth(), workdir=far_dir).start()
        closers.append(far.close)
        far_private = _image(5301)
        oci.publish(far_private, f"{far.host}/lab/private:1", creds="pusher:pusherpw")

        own = {"username": FILLER[0], "password": FILLER[1]}
        upstreams = {LAB: {"url": seeded.registry.url}, "basic.lab": {"url": basic.url, **own},
                     "token.lab": {"url": token.url, **own}, "far.lab": {"url": far.url, **own}}  # fmt: skip
        cache = Cache({}, extra={"upstreams": upstreams}).start()
        closers.append(cache.close)
        yield Lab(cache, basic, token, tokens, far_tokens, basic_private, images["private"],
                  images["bobs"], images["public"], far_private)  # fmt: skip
    finally:
        for close in reversed(closers):
            close()
        shutil.rmtree(workdir, ignore_errors=True)


def skopeo(lab: Lab, ref: str, dest: Path, creds: str | None = None) -> subprocess.CompletedProcess[str]:
    return skopeo_copy(f"{lab.cache.host}/{ref}", dest, f"--src-creds={creds}" if creds else "--src-no-creds")


def get(lab: Lab, path: str, creds: tuple[str, str] | None = None) -> requests.Response:
    return requests.get(f"{lab.cache.url}{path}", auth=creds, timeout=30)


def statuses(lab: Lab, repo: str, image: oci.Image, creds: tuple[str, str] | None = None) -> list[int]:
    """Status of the manifest (by tag and digest) and of every blob, through `repo`."""
    paths = [f"/v2/{repo}/manifests/1", f"/v2/{repo}/manifests/{image.digest}"]
    paths += [f"/v2/{repo}/blobs/{d}" for d in image.blob_digests]
    return [get(lab, p, creds).status_code for p in paths]


class TestBasicAuthUpstream:
    def test_clients_without_the_right_credential_get_nothing_before_or_after_caching(
        self, lab: Lab, tmp_path: Path
    ) -> None:
        """Anonymous and wrong-password clients get 401 for the manifest and every blob of a
        private image, before and after alice pulled it (so the answer tells nothing), and
        404 for its blobs through a public repository name and through `?ns=`."""
        image = lab.basic_private
        public_paths = [f"/v2/{LAB}/lab/hello/blobs/{d}" for d in image.blob_digests]
        public_paths += [f"/v2/lab/hello/blobs/{d}?ns={LAB}" for d in image.blob_digests]
        for phase in ("before", "after"):
            assert set(statuses(lab, "basic.lab/lab/private", image)) == {401}, phase
            assert set(statuses(lab, "basic.lab/lab/private", image, ("mallory", "wrong"))) == {401}, phase
            assert {get(lab, p).status_code for p in public_paths} == {404}, phase
            assert skopeo(lab, "basic.lab/lab/private:1", tmp_path / f"anon-{phase}").returncode != 0
            bad = skopeo(lab, "basic.lab/lab/private:1", tmp_path / f"bad-{phase}", "mallory:wrong")
            assert bad.returncode != 0
            if phase == "before":
                assert set(image.blob_digests).isdisjoint(lab.cache.stored_blobs())
                good = skopeo(lab, "basic.lab/lab/private:1", tmp_path / "alice", "alice:alicepw")
                assert good.returncode == 0, good.stderr
                assert_dir_matches(tmp_path / "alice", image)
        assert set(image.blob_digests) <= lab.cache.stored_blobs()
        challenge = get(lab, "/v2/basic.lab/lab/private/manifests/1").headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer realm=") and "/v2/token" in challenge

    def test_containerd_with_and_without_credentials(
        self, lab: Lab, containerd_factory: Callable[..., object]
    ) -> None:
        """`ctr images pull --user` gets the private image through the cache's token flow;
        without credentials the pull fails."""
        ctrd = containerd_factory()
        ref = f"{lab.cache.host}/basic.lab/lab/private:1"
        denied = ctrd.ctr("images", "pull", "--plain-http", ref, check=False)  # type: ignore[attr-defined]
        assert denied.returncode != 0
        ctrd.ctr("images", "pull", "--plain-http", "--user", "alice:alicepw", ref)  # type: ignore[attr-defined]
        assert ctrd.image_digest(ref) == lab.basic_private.digest  # type: ignore[attr-defined]


class TestTokenAuthUpstream:
    def test_per_repository_access_follows_the_upstream(self, lab: Lab, tmp_path: Path) -> None:
        """alice reads lab/private; bob (valid credentials) does not, not even by digest
        through his own lab/bobs; anyone reads lab/public."""
        private = lab.token_private
        good = skopeo(lab, "token.lab/lab/private:1", tmp_path / "alice", "alice:alicepw")
        assert good.returncode == 0, good.stderr
        assert_dir_matches(tmp_path / "alice", private)
        assert set(statuses(lab, "token.lab/lab/private", private, ("bob", "bobpw"))) == {401}
        assert set(statuses(lab, "token.lab/lab/bobs", private, ("bob", "bobpw"))[1:]) == {404}
        assert set(statuses(lab, "token.lab/lab/bobs", lab.token_bobs, ("bob", "bobpw"))) == {200}
        public = skopeo(lab, "token.lab/lab/public:1", tmp_path / "anon")
        assert public.returncode == 0, public.stderr
        assert_dir_matches(tmp_path / "anon", lab.token_public)
        assert set(statuses(lab, "token.lab/lab/public", private)[1:]) == {404}

    def test_credentials_never_go_to_a_realm_on_another_host(self, lab: Lab) -> None:
        """far.lab names a token realm on 127.0.0.2 over http: neither the cache's own nor a
        client's credentials are sent there (the token is asked for anonymously), so the
        private image cannot be read through the cache at all."""
        before = len(lab.far_tokens.requests)
        assert statuses(lab, "far.lab/lab/private", lab.far_private, ("filler", "fillerpw"))[0] == 401
        prefetch = requests.post(f"{lab.cache.url}/api/v1/prefetch", headers=lab.cache.auth, timeout=60,
                                 json={"image": "far.lab/lab/private:1", "wait": 30})  # fmt: skip
        assert prefetch.json()["state"] == "failed"
        asked = lab.far_tokens.requests[before:]
        assert asked, "the cache never asked the far realm"
        assert {r.user for r in asked} == {None}


class TestPublicFlag:
    def test_public_true_turns_checks_off(self, lab: Lab, cache_factory: Callable[..., Cache],
                                          tmp_path: Path) -> None:  # fmt: skip
        """With `public: true` an anonymous client pulls the private image (the cache's own
        credentials fill it): the operator's explicit choice."""
        own = {"username": FILLER[0], "password": FILLER[1], "public": True}
        cache = cache_factory(extra={"upstreams": {"basic.lab": {"url": lab.basic.url, **own}}})
        result = skopeo_copy(f"{cache.host}/basic.lab/lab/private:1", tmp_path / "o", "--src-no-creds")
        assert result.returncode == 0, result.stderr
        assert_dir_matches(tmp_path / "o", lab.basic_private)
        assert requests.get(f"{cache.url}/v2/", timeout=10).status_code == 200


class TestAdmin:
    def test_prefetch_with_a_registry_auth_checks_it(self, lab: Lab) -> None:
        """A prefetch carrying the VM's registryAuth (as the hook sends it) is refused for a
        credential that cannot read the image, and done for one that can."""
        import base64

        def prefetch(user: str, password: str) -> requests.Response:
            auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            body = {"image": "token.lab/lab/bobs:1", "wait": 30, "registry_auth": auth}
            return requests.post(f"{lab.cache.url}/api/v1/prefetch", headers=lab.cache.auth, timeout=60,
                                 json=body)  # fmt: skip

        denied = prefetch("alice", "alicepw")
        assert denied.status_code == 401, denied.text
        done = prefetch("bob", "bobpw")
        assert done.status_code == 200 and done.json()["state"] == "done", done.text
