"""The upstream registry client: the only module that imports `requests`.

Speaks the read side of the distribution API with the auth registries use in practice:
anonymous, basic credentials, or the Bearer token flow (401 + `WWW-Authenticate: Bearer
realm=..,service=..` -> token endpoint with `scope=repository:<name>:pull`, token reused
until it expires). Redirects to blob storage are followed (requests drops the Authorization
header when the host changes). Idempotent requests are retried with backoff on connection
errors and 429/5xx. Every requests exception is mapped into nic_cache.errors here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from werkzeug.datastructures import WWWAuthenticate

from .config import Config, UpstreamConfig
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
from .reference import display_reference

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
USER_AGENT = "nic-cache/0.1 (faas-accel)"
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
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- auth -----------------------------------------------------------------------------

    def _basic(self) -> tuple[str, str] | None:
        if self.cfg.username is None or self.cfg.password is None:
            return None
        return (self.cfg.username, self.cfg.password)

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return {"Authorization": f"Bearer {token[0]}"}
        return {}

    def _fetch_token(self, challenge: WWWAuthenticate, scope: str) -> None:
        realm = challenge.get("realm") or ""
        if not realm:
            raise Unauthorized(f"upstream {self.name} sent a Bearer challenge without realm")
        params = {"scope": scope}
        service = challenge.get("service")
        if service:
            params["service"] = service
        auth = self._basic()
        try:
            resp = self.session.get(realm, params=params, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise UpstreamUnavailable(f"token endpoint of {self.name} unreachable: {exc}") from exc
        with resp:
            if resp.status_code in (401, 403):
                raise Unauthorized(f"upstream {self.name} refused our credentials for {scope}")
            if resp.status_code != 200:
                raise UpstreamRejected(
                    f"token endpoint of {self.name} answered {resp.status_code}",
                    upstream_status=resp.status_code,
                )
            body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise UpstreamRejected(
                f"token endpoint of {self.name} returned no token", upstream_status=200
            )
        expires = float(body.get("expires_in") or 60)
        with self._lock:
            # renew a little early so a token never expires between check and use
            self._tokens[scope] = (token, time.monotonic() + max(expires - 10, expires / 2))

    def request(
        self, method: str, repository: str, path: str, *, headers: dict[str, str] | None = None,
        stream: bool = False, params: dict[str, Any] | None = None,
    ) -> requests.Response:
        """Send an authenticated request to `<url>/v2/<repository>/<path>`.

        Handles one round of 401 challenge (Bearer token or basic credentials).
        Raises UpstreamUnavailable when the upstream cannot be reached.
        """
        url = f"{self.cfg.url}/v2/{repository}/{path}" if repository else f"{self.cfg.url}/v2/"
        scope = f"repository:{repository}:pull"
        basic = self._basic()
        use_basic = False
        for attempt in range(2):
            hdrs = dict(headers or {})
            hdrs.update(self._auth_header(scope))
            try:
                resp = self.session.request(
                    method, url, headers=hdrs, stream=stream, params=params,
                    timeout=self.timeout, auth=basic if use_basic else None,
                )
            except requests.RequestException as exc:
                raise UpstreamUnavailable(f"upstream {self.name} unreachable: {exc}") from exc
            if resp.status_code != 401 or attempt == 1:
                return resp
            challenge = WWWAuthenticate.from_header(resp.headers.get("WWW-Authenticate"))
            resp.close()
            if challenge is None:
                raise Unauthorized(f"upstream {self.name} requires auth but sent no challenge")
            if challenge.type == "bearer":
                self._fetch_token(challenge, scope)
            elif challenge.type == "basic" and basic:
                use_basic = True
            else:
                raise Unauthorized(f"upstream {self.name} requires credentials we do not have")
        raise AssertionError("unreachable")

    # -- registry operations --------------------------------------------------------------

    def head_manifest(self, repository: str, reference: str, accept: tuple[str, ...]) -> ManifestHead:
        """HEAD a manifest; raises ManifestUnknown/NameUnknown/Upstream* errors."""
        resp = self.request("HEAD", repository, f"manifests/{reference}", headers=_accept(accept))
        with resp:
            self._check(resp, ManifestUnknown, f"manifest {display_reference(repository, reference)}")
            length = resp.headers.get("Content-Length")
            return ManifestHead(
                digest=resp.headers.get("Docker-Content-Digest"),
                media_type=_media_type(resp),
                size=int(length) if length and length.isdigit() else None,
            )

    def get_manifest(self, repository: str, reference: str, accept: tuple[str, ...]) -> Manifest:
        """GET a manifest's bytes; raises ManifestUnknown/NameUnknown/Upstream* errors."""
        resp = self.request("GET", repository, f"manifests/{reference}", headers=_accept(accept))
        with resp:
            self._check(resp, ManifestUnknown, f"manifest {display_reference(repository, reference)}")
            try:
                body = resp.content
            except requests.RequestException as exc:
                raise UpstreamUnavailable(f"manifest transfer failed: {exc}") from exc
            return Manifest(body, _media_type(resp), resp.headers.get("Docker-Content-Digest"))

    def open_blob(self, repository: str, digest: str) -> BlobStream:
        """Start streaming a blob; raises BlobUnknown/Upstream* errors before any byte."""
        resp = self.request("GET", repository, f"blobs/{digest}", stream=True)
        try:
            self._check(resp, BlobUnknown, f"blob {digest}")
        except RegistryError:
            resp.close()
            raise
        return BlobStream(resp)

    def head_blob(self, repository: str, digest: str) -> int | None:
        """The blob's size upstream (None if unsent); raises BlobUnknown/Upstream* errors."""
        resp = self.request("HEAD", repository, f"blobs/{digest}")
        with resp:
            self._check(resp, BlobUnknown, f"blob {digest}")
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    def tags(self, repository: str, params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The upstream tag list and its `Link` header for pagination."""
        resp = self.request("GET", repository, "tags/list", params=params)
        with resp:
            self._check(resp, NameUnknown, f"repository {repository}")
            return resp.json(), resp.headers.get("Link")

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
