"""The upstream registry client: the only module that imports `requests`.

Speaks the read side of the distribution API with the auth registries use in practice:
anonymous, basic credentials, or the Bearer token flow (401 + `WWW-Authenticate: Bearer
realm=..,service=..` -> token endpoint with `scope=repository:<name>:pull`, token reused
until it expires). Redirects to blob storage are followed to the same host, or to https
elsewhere without credentials (nic_cache/credentials.py); a token realm gets credentials
only on the upstream's host or when listed in the upstream's `realms`. A request may be made
as a client of the cache (with that client's own `Authorization`), which is how the cache
learns what a client may read. Idempotent requests are retried with backoff on connection
errors and 429/5xx. Every requests exception is mapped into nic_cache.errors here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from werkzeug.datastructures import WWWAuthenticate

from .config import Config, UpstreamConfig
from .credentials import Credential, realm_allowed, redirect_allowed
from .errors import (
    BlobUnknown,
    Denied,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    Unauthorized,
    UpstreamRejected,
    UpstreamUnavailable,
)
from .reference import DOCKER_HUB_ALIASES, display_reference

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
USER_AGENT = "nic-cache/0.1 (faas-accel)"
MAX_REDIRECTS = 5
DOCKER_HUB_REALM = "https://auth.docker.io/token"
log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD (or GET) of a manifest says."""

    digest: str | None
    media_type: str
    size: int | None


@dataclass(frozen=True)
class Manifest:
    """A manifest fetched from upstream."""

    body: bytes
    media_type: str
    digest: str | None  # Docker-Content-Digest as sent upstream, if any


class BlobStream:
    """An open upstream blob response: `size` (None if not sent) and raw chunks."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        length = response.headers.get("Content-Length")
        self.size = int(length) if length and length.isdigit() else None

    def chunks(self) -> Iterator[bytes]:
        """The body exactly as sent (no content decoding); raises UpstreamUnavailable."""
        try:
            yield from self._response.raw.stream(CHUNK, decode_content=False)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream blob transfer failed: {exc}") from exc

    def close(self) -> None:
        self._response.close()


class Upstream:
    """A client for one upstream registry."""

    def __init__(self, name: str, cfg: UpstreamConfig, config: Config) -> None:
        self.name = name
        self.cfg = cfg
        self.timeout = (config.connect_timeout, config.read_timeout)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = cfg.tls_verify
        self.session.trust_env = False  # an operator's proxy env must not reroute the WAN path
        retry = Retry(
            total=config.retries,
            connect=config.retries,
            read=config.retries,
            status=config.retries,
            backoff_factor=0.2,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=64)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        hub = (DOCKER_HUB_REALM,) if name in DOCKER_HUB_ALIASES else ()
        self.realms = (*cfg.realms, *hub)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- auth -----------------------------------------------------------------------------

    def _basic(self, client: Credential | None) -> tuple[str, str] | None:
        if client is not None:  # acting for a client: its credentials, never ours
            return client.basic
        if self.cfg.username is None or self.cfg.password is None:
            return None
        return (self.cfg.username, self.cfg.password)

    def _auth_header(self, who: str, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get((who, scope))
        if token and token[1] > time.monotonic():
            return {"Authorization": f"Bearer {token[0]}"}
        return {}

    def _fetch_token(
        self, challenge: WWWAuthenticate, scope: str, who: str, basic: tuple[str, str] | None
    ) -> None:
        realm = challenge.get("realm") or ""
        if not realm:
            raise Unauthorized(f"upstream {self.name} sent a Bearer challenge without realm")
        params = {"scope": scope}
        service = challenge.get("service")
        if service:
            params["service"] = service
        if basic is not None and not realm_allowed(realm, self.cfg.url, self.realms):
            log.warning("upstream %s names token realm %s, not its host nor a listed realm: "
                        "asking it without credentials", self.name, realm)  # fmt: skip
            basic = None
        try:
            resp = self.session.get(realm, params=params, auth=basic, timeout=self.timeout,
                                    allow_redirects=False)  # fmt: skip
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"token endpoint of {self.name} unreachable: {exc}") from exc
        with resp:
            if resp.status_code in (401, 403):
                raise Unauthorized(f"upstream {self.name} refused the credentials for {scope}")
            if resp.status_code != 200:
                raise UpstreamRejected(
                    f"token endpoint of {self.name} answered {resp.status_code}",
                    upstream_status=resp.status_code,
                )
            try:
                body = resp.json()
            except ValueError as exc:
                raise UpstreamRejected(f"token endpoint of {self.name} sent no JSON",
                                       upstream_status=200) from exc  # fmt: skip
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise UpstreamRejected(
                f"token endpoint of {self.name} returned no token", upstream_status=200
            )
        expires = float(body.get("expires_in") or 60)
        with self._lock:
            # renew a little early so a token never expires between check and use
            self._tokens[(who, scope)] = (token, time.monotonic() + max(expires - 10, expires / 2))

    def request(
        self, method: str, repository: str, path: str, *, headers: dict[str, str] | None = None,
        stream: bool = False, params: dict[str, Any] | None = None, client: Credential | None = None,
    ) -> requests.Response:
        """Send an authenticated request to `<url>/v2/<repository>/<path>`.

        With `client`, the request is made as that client (its basic credentials through one
        round of 401 challenge, its bearer token as is, or anonymously); otherwise with the
        cache's own credentials. Raises UpstreamUnavailable when the upstream cannot be
        reached, Unauthorized when the credentials in use are not enough.
        """
        url = f"{self.cfg.url}/v2/{repository}/{path}" if repository else f"{self.cfg.url}/v2/"
        scope = f"repository:{repository}:pull"
        who = client.key if client is not None else "cache"
        basic = self._basic(client)
        bearer = client.bearer if client is not None else None
        use_basic = False
        for attempt in range(2):
            hdrs = dict(headers or {})
            hdrs.update({"Authorization": bearer} if bearer else self._auth_header(who, scope))
            resp = self._send(method, url, hdrs, stream, params, basic if use_basic else None)
            if resp.status_code != 401 or attempt == 1 or bearer:
                return resp
            challenge = WWWAuthenticate.from_header(resp.headers.get("WWW-Authenticate"))
            resp.close()
            if challenge is None:
                raise Unauthorized(f"upstream {self.name} requires auth but sent no challenge")
            if challenge.type == "bearer":
                self._fetch_token(challenge, scope, who, basic)
            elif challenge.type == "basic" and basic:
                use_basic = True
            else:
                raise Unauthorized(f"upstream {self.name} requires credentials that were not given")
        raise AssertionError("unreachable")

    def _send(
        self, method: str, url: str, headers: dict[str, str], stream: bool,
        params: dict[str, Any] | None, auth: tuple[str, str] | None,
    ) -> requests.Response:
        """One request, following redirects only where `redirect_allowed` says (credentials
        never leave the upstream's host)."""
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = self.session.request(
                    method, url, headers=headers, stream=stream, params=params,
                    timeout=self.timeout, auth=auth, allow_redirects=False,
                )
            except requests.RequestException as exc:
                raise UpstreamUnavailable(f"upstream {self.name} unreachable: {exc}") from exc
            location = resp.headers.get("Location")
            if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                return resp
            target = urljoin(resp.url, location)
            resp.close()
            follow, keep_auth = redirect_allowed(url, target)
            if not follow:
                raise UpstreamRejected(
                    f"upstream {self.name} redirected to {urlsplit(target).netloc or target!r} "
                    "over plain http or an unknown scheme; not followed",
                    upstream_status=resp.status_code,
                )
            if not keep_auth:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                auth = None
            url, params = target, None
            if resp.status_code == 303:
                method = "GET"
        raise UpstreamRejected(f"upstream {self.name} redirected more than {MAX_REDIRECTS} times",
                               upstream_status=310)  # fmt: skip

    # -- registry operations --------------------------------------------------------------

    def head_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...], client: Credential | None = None
    ) -> ManifestHead:
        """HEAD a manifest; raises ManifestUnknown/NameUnknown/Upstream* errors."""
        resp = self.request("HEAD", repository, f"manifests/{reference}", headers=_accept(accept),
                            client=client)  # fmt: skip
        with resp:
            self._check(resp, ManifestUnknown, f"manifest {display_reference(repository, reference)}")
            length = resp.headers.get("Content-Length")
            return ManifestHead(
                digest=resp.headers.get("Docker-Content-Digest"),
                media_type=_media_type(resp),
                size=int(length) if length and length.isdigit() else None,
            )

    def get_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...], client: Credential | None = None
    ) -> Manifest:
        """GET a manifest's bytes; raises ManifestUnknown/NameUnknown/Upstream* errors."""
        resp = self.request("GET", repository, f"manifests/{reference}", headers=_accept(accept),
                            client=client)  # fmt: skip
        with resp:
            self._check(resp, ManifestUnknown, f"manifest {display_reference(repository, reference)}")
            try:
                body = resp.content
            except requests.RequestException as exc:
                raise UpstreamUnavailable(f"manifest transfer failed: {exc}") from exc
            return Manifest(body, _media_type(resp), resp.headers.get("Docker-Content-Digest"))

    def open_blob(self, repository: str, digest: str, client: Credential | None = None) -> BlobStream:
        """Start streaming a blob; raises BlobUnknown/Upstream* errors before any byte."""
        resp = self.request("GET", repository, f"blobs/{digest}", stream=True, client=client)
        try:
            self._check(resp, BlobUnknown, f"blob {digest}")
        except RegistryError:
            resp.close()
            raise
        return BlobStream(resp)

    def head_blob(self, repository: str, digest: str, client: Credential | None = None) -> int | None:
        """The blob's size upstream (None if unsent); raises BlobUnknown/Upstream* errors."""
        resp = self.request("HEAD", repository, f"blobs/{digest}", client=client)
        with resp:
            self._check(resp, BlobUnknown, f"blob {digest}")
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    def tags(
        self, repository: str, params: dict[str, Any], client: Credential | None = None
    ) -> tuple[dict[str, Any], str | None]:
        """The upstream tag list and its `Link` header for pagination."""
        resp = self.request("GET", repository, "tags/list", params=params, client=client)
        with resp:
            self._check(resp, NameUnknown, f"repository {repository}")
            return resp.json(), resp.headers.get("Link")

    def may_read(self, repository: str, client: Credential) -> bool:
        """Whether `client`'s own credential (or none) can pull `repository` here: a tag list
        of one is asked for as the client. Raises NameUnknown, Upstream* errors."""
        try:
            resp = self.request("GET", repository, "tags/list", params={"n": "1"}, client=client)
        except Unauthorized:
            return False
        with resp:
            if resp.status_code in (401, 403):
                return False
            self._check(resp, NameUnknown, f"repository {repository}")
            return True

    def holds(self, repository: str, kind: str, digest: str, client: Credential) -> bool:
        """Whether `client` can read `<repository>/<kind>/<digest>` here (HEAD as the client);
        False for 401/403/404. Raises Upstream* errors."""
        try:
            resp = self.request("HEAD", repository, f"{kind}/{digest}", client=client,
                                headers=_accept(()) if kind == "manifests" else None)  # fmt: skip
        except Unauthorized:
            return False
        with resp:
            if resp.status_code in (401, 403, 404):
                return False
            self._check(resp, BlobUnknown, f"{kind[:-1]} {digest}")
            return True

    def ping(self) -> bool:
        """Whether the upstream answers `GET /v2/` at all."""
        try:
            with self.request("GET", "", "") as resp:
                return resp.status_code in (200, 401)
        except UpstreamUnavailable:
            return False

    def _check(self, resp: requests.Response, missing: type[RegistryError], what: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        where = f"upstream {self.name}"
        if status == 404:
            code = _error_code(resp)
            if code == "NAME_UNKNOWN":
                raise NameUnknown(f"{what}: repository unknown to {where}")
            raise missing(f"{what} unknown to {where}")
        if status == 401:
            raise Unauthorized(f"{what}: {where} refused our credentials")
        if status == 403:
            raise Denied(f"{what}: {where} denied access")
        if status in (429,) or status >= 500:
            raise UpstreamUnavailable(f"{what}: {where} answered {status}")
        raise UpstreamRejected(f"{what}: {where} answered {status}", upstream_status=status)


def _accept(types: tuple[str, ...]) -> dict[str, str]:
    return {"Accept": ", ".join(types or MANIFEST_TYPES)}


def _media_type(resp: requests.Response) -> str:
    return resp.headers.get("Content-Type", "").split(";")[0].strip()


def _error_code(resp: requests.Response) -> str | None:
    try:
        errors = resp.json().get("errors") or []
        return str(errors[0].get("code")) if errors else None
    except (ValueError, AttributeError, IndexError, requests.RequestException):
        return None


class Upstreams:
    """The configured upstream clients, by registry host."""

    def __init__(self, config: Config) -> None:
        self._clients = {name: Upstream(name, cfg, config) for name, cfg in config.upstreams.items()}

    def __getitem__(self, name: str) -> Upstream:
        try:
            return self._clients[name]
        except KeyError:
            raise NameUnknown(f"no upstream configured for registry {name!r}") from None

    def names(self) -> frozenset[str]:
        return frozenset(self._clients)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
