"""Safety of the surface: property tests (hypothesis) of reference parsing and of the /v2/
router, and tables of where credentials may go."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nic_cache.app import create_app
from nic_cache.config import load_config
from nic_cache.credentials import Credential, realm_allowed, redirect_allowed
from nic_cache.errors import RegistryError
from nic_cache.reference import (
    NAME_RE,
    parse_image,
    parse_registry_path,
    resolve_route,
    validate_reference,
)

UPSTREAMS = frozenset({"registry.lab", "docker.io"})
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
pathish = st.text(alphabet="abcz09._-/:@%?#ABC\\ ", max_size=120)


class TestReferenceProperties:
    @given(text)
    def test_parse_image_returns_a_valid_reference_or_a_registry_error(self, image: str) -> None:
        """Any string either parses into a reference whose parts are valid, or raises an
        OCI-facing RegistryError (never another exception)."""
        try:
            ref = parse_image(image)
        except RegistryError:
            return
        assert NAME_RE.fullmatch(ref.repository)
        assert ref.tag is None or validate_reference(ref.tag) == ref.tag
        assert parse_image(str(ref)) == ref  # the printed form parses back to itself

    @given(pathish, st.one_of(st.none(), text))
    def test_a_route_only_names_a_configured_upstream(self, rest: str, ns: str | None) -> None:
        """Whatever the path and ?ns=, the route names a configured upstream (no SSRF) and a
        valid repository, or the request is refused with a RegistryError."""
        try:
            path = parse_registry_path(rest)
            route = resolve_route(path.name, ns=ns, upstreams=UPSTREAMS, default_upstream=None)
        except RegistryError:
            return
        assert route.upstream in UPSTREAMS
        assert NAME_RE.fullmatch(route.repository)
        assert ".." not in route.repository.split("/")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The cache app (no upstream reachable: 127.0.0.1:9 refuses) under Flask's test client."""
    data = tmp_path_factory.mktemp("surface")
    config = load_config(
        f"data_dir: {data}\nupstreams: {{registry.lab: {{url: 'http://127.0.0.1:9'}}}}\n"
        "retries: 0\nconnect_timeout: 1s\n",
        {},
    )
    app = create_app(config)
    yield app.test_client()
    app.extensions["nic_cache"].store.close()


RANGES = ["bytes=abc", "bytes=0-1,3-4", "bytes=5-", "x" * 5000]


class TestRouterProperties:
    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
    @given(st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]), pathish,
           st.one_of(st.none(), st.sampled_from(RANGES)))  # fmt: skip
    def test_every_answer_is_an_oci_error_or_a_success(
        self, client: object, method: str, rest: str, range_header: str | None
    ) -> None:
        """Any method, path and Range get either a 2xx or a 4xx/5xx with OCI error JSON,
        never a 500 with a traceback, and nothing is ever written for a refused request."""
        headers = {"Range": range_header} if range_header else {}
        resp = client.open(f"/v2/{rest}", method=method, headers=headers)  # type: ignore[attr-defined]
        if resp.status_code < 300 or resp.status_code in (301, 308):
            return
        assert resp.status_code != 500, resp.get_data(as_text=True)
        if method != "HEAD":
            body = resp.get_json(silent=True)
            assert body and body["errors"][0]["code"], resp.get_data(as_text=True)


class TestCredentialRules:
    @pytest.mark.parametrize(
        ("realm", "listed", "allowed"),
        [("http://127.0.0.1:5001/token", (), True),  # same host, another port
         ("https://reg.example/token", (), True),
         ("http://127.0.0.2:5001/token", (), False),  # another host over http
         ("https://auth.example/token", (), False),  # another host, not listed
         ("https://auth.example/token", ("https://auth.example/token",), True),
         ("https://auth.example/token/x", ("https://auth.example/token",), True),
         ("https://auth.example.evil/token", ("https://auth.example",), False),
         ("ftp://reg.example/token", (), False)],
        ids=["same-host-port", "same-host-https", "other-host-http", "other-host-unlisted",
             "listed", "listed-prefix", "lookalike-host", "ftp"],
    )  # fmt: skip
    def test_realm(self, realm: str, listed: tuple[str, ...], allowed: bool) -> None:
        """Credentials go to a token realm on the upstream's host or one the operator lists."""
        upstream = "http://127.0.0.1:5000" if realm.startswith(("http://127", "ftp")) else "https://reg.example"
        assert realm_allowed(realm, upstream, listed) is allowed

    @pytest.mark.parametrize(
        ("target", "expected"),
        [("https://reg.example/v2/x", (True, True)), ("http://reg.example/v2/x", (False, False)),
         ("https://cdn.example/blob", (True, False)), ("http://cdn.example/blob", (False, False)),
         ("file:///etc/passwd", (False, False))],
        ids=["same-host", "downgrade", "cdn-https", "cdn-http", "file"],
    )  # fmt: skip
    def test_redirect(self, target: str, expected: tuple[bool, bool]) -> None:
        """Redirects: same host keeps Authorization, https elsewhere drops it, http elsewhere
        or a downgrade is refused."""
        assert redirect_allowed("https://reg.example/v2/x/blobs/d", target) == expected

    def test_credential_parsing(self) -> None:
        """Basic and Bearer headers are understood; junk is neither."""
        assert Credential("Basic YWxpY2U6cHc=").basic == ("alice", "pw")
        assert Credential("Bearer abc").bearer == "Bearer abc"
        assert not Credential("Basic !!!").usable and not Credential("Digest x").usable
        assert Credential().anonymous and Credential().usable

