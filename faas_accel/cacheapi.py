"""The one client of the NIC cache's admin API (`/api/v1`, bearer token).

The hook, prepull and its fan-out, the prewarm scheduler, `faas-accel cache` and the
benchmarks all talk to the cache through `CacheAPI`: it is the only place a request to
`/api/v1/` is made and where `requests`' exceptions are mapped. Errors::

    CacheAPIError            the admin API did not give what was asked (status 0, code "")
    ├── BadURL               the URL is not http(s)://host[:port] (raised before any request)
    ├── CacheUnreachable     no answer at all: refused, reset, timed out
    ├── BadAnswer            an answer that is not the JSON the admin API gives
    └── Refused              an error answer: its HTTP status, OCI code, message and detail
        ├── Unauthorized     401: the admin token is missing or wrong
        └── NotFound         404: no such image, schedule or run

Every error's `reason` is one line a command line can print as it is (what to check: the URL,
the token, whether the cache runs); `str(error)` puts the call in front of it, except for
BadURL and CacheUnreachable, whose reason already names the URL.

Typed records: `CachedImage` (`GET /images`), `PopularImage` (`GET /popular`), `Progress`
(`POST /prefetch`) and `DeployEvents` (`GET /events/deploys`). Documents that callers pass on
as they are (a dry-run plan, stats, the prewarm state and runs) stay dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit

import requests

UNAUTHORIZED = "the cache refused the admin token (401): pass --token or set NIC_CACHE_ADMIN_TOKEN"


class CacheAPIError(Exception):
    """The admin API did not give what was asked; the message says which call and why."""

    status: int = 0  # the HTTP status of an error answer, 0 when there was none
    code: str = ""  # its OCI error code ("NOT_LEADER", "NAME_UNKNOWN", ...)

    def __init__(self, reason: str, what: str = "") -> None:
        super().__init__(f"{what}: {reason}" if what else reason)
        self.reason, self.what = reason, what


class BadURL(CacheAPIError):
    """The cache URL is not http(s)://host[:port]."""


class CacheUnreachable(CacheAPIError):
    """The cache did not answer (refused, reset, timed out)."""


class BadAnswer(CacheAPIError):
    """The cache answered with something that is not the admin API's JSON."""


class Refused(CacheAPIError):
    """The cache answered with an error: its status, OCI code, message and detail."""

    def __init__(
        self, what: str, status: int, code: str, message: str, detail: Any = None, *, reason: str = ""
    ) -> None:
        super().__init__(reason or f"HTTP {status}{' ' + code if code else ''}: {message}", what)
        self.status, self.code, self.message, self.detail = status, code, message, detail


class Unauthorized(Refused):
    """401: the admin token is missing or wrong (or the admin API is disabled)."""


class NotFound(Refused):
    """404: the cache knows no such image, schedule or run."""


def _record(cls: type[Any], doc: Any, what: str) -> Any:
    """`cls(**doc)` with each field converted to its declared type; BadAnswer if it cannot be."""
    try:
        if not isinstance(doc, Mapping):
            raise TypeError(f"not an object: {doc!r}")
        kwargs = {}
        for f in fields(cls):
            if f.name not in doc:
                continue
            value = doc[f.name]
            kwargs[f.name] = None if value is None else _CONVERT[str(f.type)](value)
        return cls(**kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadAnswer(f"{what} is not what the cache's admin API answers: {exc!r}") from exc


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not true or false: {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise TypeError(f"not a list: {value!r}")
    return tuple(str(v) for v in value)


_CONVERT: dict[str, Any] = {
    "str": str, "str | None": str, "int": int, "int | None": int, "float": float,
    "float | None": float, "bool": _bool, "tuple[str, ...]": _strings,
}  # fmt: skip


@dataclass(frozen=True)
class CachedImage:
    """One cached tag and how much of it is stored (`GET /images`)."""

    image: str
    digest: str | None = None
    media_type: str | None = None
    fetched_at: float = 0.0
    blobs_known: int = 0
    blobs_stored: int = 0
    bytes_stored: int = 0
    pinned: bool = False
    variant: str | None = None  # the digest of its re-encoded (zstd) manifest, once made
    variant_state: str = "none"  # none | pending | stored | refused (transcoder.py)

    @classmethod
    def from_doc(cls, doc: Any) -> CachedImage:
        """From one item of the answer; raises BadAnswer."""
        image: CachedImage = _record(cls, doc, "an item of the cache's image list")
        return image


@dataclass(frozen=True)
class PopularImage:
    """An image's standing in the cache's ranking (`GET /popular`)."""

    image: str
    score: float = 0.0
    pulls: int = 0
    deploys: int = 0
    vms: int = 0
    last_seen: float | None = None
    size: int | None = None
    cached: bool = False

    @classmethod
    def from_doc(cls, doc: Any) -> PopularImage:
        """From one item of the answer; raises BadAnswer."""
        image: PopularImage = _record(cls, doc, "an item of the cache's ranking")
        return image


@dataclass(frozen=True)
class PredictedImage:
    """An image the eviction policy expects to be pulled soon (`GET /predicted`)."""

    image: str
    due: float = 0.0  # when its predicted use window opens
    bytes: int = 0  # of the blobs the cache lacks
    blobs: tuple[str, ...] = ()  # those blobs

    @classmethod
    def from_doc(cls, doc: Any) -> PredictedImage:
        """From one item of the answer; raises BadAnswer."""
        image: PredictedImage = _record(cls, doc, "an item of the cache's predicted plan")
        return image


@dataclass(frozen=True)
class Progress:
    """How far a prefetch got (`POST /prefetch`, nic_cache/prefetch.py)."""

    image: str
    state: str = "failed"  # running | done | failed
    priority: str = "live"
    pinned: bool = False
    digest: str | None = None
    platforms: tuple[str, ...] = ()
    manifests: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    blobs_cached_before: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_cached_before: int = 0
    errors: tuple[str, ...] = ()
    started: float = 0.0
    seconds: float = 0.0

    @classmethod
    def from_doc(cls, doc: Any) -> Progress:
        """From the answer; raises BadAnswer."""
        progress: Progress = _record(cls, doc, "the cache's prefetch progress")
        return progress

    def as_dict(self) -> dict[str, Any]:
        """The document the cache answered (lists as lists)."""
        return {**asdict(self), "platforms": list(self.platforms), "errors": list(self.errors)}


@dataclass(frozen=True)
class DeployEvent:
    """A deploy a VM's hook reported."""

    image: str
    vm: str | None
    ts: float


@dataclass(frozen=True)
class DeployEvents:
    """Deploys after a cursor (`GET /events/deploys`), and the cursor to ask from next."""

    events: tuple[DeployEvent, ...] = ()
    next: float = 0.0


class CacheAPI:
    """The admin API of the cache at `url`; every method raises CacheAPIError (see above)."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        self.url = check_url(url)
        self.timeout = timeout  # to connect, and to read an answer that is not waited for
        self.session = requests.Session()
        self.session.trust_env = False  # loopback/lab addresses must not go through a proxy
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        """Close the connections to the cache."""
        self.session.close()

    def __enter__(self) -> CacheAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self, method: str, path: str, *, wait: float = 0.0, progress: bool = False, **kw: Any
    ) -> dict[str, Any]:
        """`method /api/v1/<path>` as a JSON object. `wait`: seconds the cache may take on top
        of the timeout; `progress`: an error answer that carries a `state` is an answer."""
        what = f"{method} /api/v1/{path}"
        try:
            resp = self.session.request(
                method, f"{self.url}/api/v1/{path}", timeout=(self.timeout, self.timeout + wait), **kw
            )
        except requests.RequestException as exc:
            waited = self.timeout if isinstance(exc, requests.ConnectTimeout) else self.timeout + wait
            reason = transport_reason(exc, waited)
            raise CacheUnreachable(f"cannot reach the NIC cache at {self.url}: {reason}") from exc
        with resp:
            try:
                body = resp.json()
            except ValueError as exc:
                if resp.status_code < 400:
                    raise BadAnswer(f"the NIC answered something not JSON: {exc}", what) from exc
                body = None
        if resp.status_code >= 400 and not (progress and isinstance(body, dict) and "state" in body):
            raise _refusal(what, resp, body)
        if not isinstance(body, dict):
            raise BadAnswer(f"expected a JSON object, got {type(body).__name__}", what)
        return body

    # -- images ---------------------------------------------------------------------------

    def images(self) -> list[CachedImage]:
        """Every cached image with how much of it is stored."""
        return [CachedImage.from_doc(i) for i in _items(self.call("GET", "images"), "images")]

    def popular(
        self,
        limit: int = 20,
        *,
        window: float | None = None,
        half_life: float | None = None,
        min_pulls: int | None = None,
    ) -> list[PopularImage]:
        """The cache's ranking, most popular first (the cache's defaults for what is None)."""
        params: dict[str, Any] = {"limit": limit}
        if window is not None:
            params["window"] = f"{window:g}s"
        if min_pulls is not None:
            params["min_pulls"] = min_pulls
        if half_life is not None:
            params["half_life"] = f"{half_life:g}s"
        doc = self.call("GET", "popular", params=params)
        return [PopularImage.from_doc(i) for i in _items(doc, "images")]

    def predicted(self, *, budget: int, horizon: float) -> list[PredictedImage]:
        """What the cache's eviction policy expects to be pulled within `horizon` seconds and
        lacks, at most `budget` bytes of it, the soonest first."""
        doc = self.call("GET", "predicted", params={"budget": str(budget), "horizon": f"{horizon:g}s"})
        return [PredictedImage.from_doc(i) for i in _items(doc, "images")]

    def prefetch(
        self,
        image: str,
        *,
        wait: float,
        platforms: Sequence[str] | None = None,
        background: bool = False,
        pin: bool = False,
        schedule: str | None = None,
        limits: Mapping[str, int] | None = None,
        registry_auth: str | None = None,
        transcode: bool = True,
    ) -> Progress:
        """Fill `image` (manifests and blobs), waiting at most `wait` seconds for it; a fill
        that failed is a Progress in state `failed`, a request the cache refused is Refused.

        `background` fills share the prewarm budget (`limits`, else the registered prewarm
        file's) and give way to live misses; `pin` pins the image (held by `schedule`);
        `registry_auth` (an OpenFaaS registryAuth) makes the cache check that this credential
        can read the image; `transcode` False keeps its layers as pushed."""
        body: dict[str, Any] = {"image": image, "wait": wait}
        if platforms:
            body["platforms"] = list(platforms)
        if background:
            body["priority"] = "background"
        if pin:
            body["pin"] = True
        if schedule:
            body["schedule"] = schedule
        if limits is not None:
            body["limits"] = dict(limits)
        if registry_auth:
            body["registry_auth"] = registry_auth
        if not transcode:
            body["transcode"] = False
        return Progress.from_doc(self.call("POST", "prefetch", json=body, wait=wait, progress=True))

    def plan(
        self, image: str, *, platforms: Sequence[str] | None = None, wait: float = 3600.0
    ) -> dict[str, Any]:
        """What a prefetch of `image` would fetch (a dry run: only manifests are fetched, for
        at most `wait` seconds)."""
        body: dict[str, Any] = {"image": image, "dry_run": True, "wait": wait}
        if platforms:
            body["platforms"] = list(platforms)
        return self.call("POST", "prefetch", json=body, wait=wait)

    def delete_image(self, image: str) -> list[str]:
        """Forget `image`; the blobs no other cached image needs, deleted."""
        return [str(d) for d in self.call("DELETE", f"images/{image}", wait=60.0).get("deleted", [])]

    def stats(self) -> dict[str, Any]:
        """Store usage and the request counters of every worker."""
        return self.call("GET", "stats")

    # -- deploys --------------------------------------------------------------------------

    def report_deploy(self, image: str, function: str | None = None, *, vm: str | None = None) -> None:
        """Record a deploy for popularity; without `vm` the cache knows the VM by the
        address the report comes from, as it knows the VM's pulls."""
        body: dict[str, Any] = {"image": image, "function": function}
        if vm is not None:
            body["vm"] = vm
        self.call("POST", "events/deploy", json=body)

    def deploy_events(self, *, vm: str, after: float | None, wait: float) -> DeployEvents:
        """Deploys other VMs' hooks reported after `after`, waiting up to `wait` seconds for
        one; without `after`, none and the cursor to start from."""
        params: dict[str, Any] = {"vm": vm, "wait": f"{wait:g}"}
        if after is not None:
            params["after"] = repr(after)
        doc = self.call("GET", "events/deploys", params=params, wait=wait)
        try:
            events = tuple(DeployEvent(str(e["image"]), e.get("vm"), float(e["ts"])) for e in doc["events"])
            return DeployEvents(events, float(doc.get("next", after or 0.0)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BadAnswer(f"the cache's deploy feed is not what its admin API answers: {exc!r}") from exc

    # -- prewarm --------------------------------------------------------------------------

    def heartbeat(self, holder: str, ttl: float, registration: dict[str, Any] | None) -> dict[str, Any]:
        """Take or renew the prewarm lease; `{"leader", "holder", "requests"}`."""
        body = {"holder": holder, "ttl": ttl, "registration": registration}
        return self.call("POST", "prewarm/heartbeat", json=body)

    def release(self, holder: str) -> None:
        """Give the prewarm lease up."""
        self.call("DELETE", "prewarm/lease", params={"holder": holder})

    def start_run(
        self,
        name: str,
        *,
        holder: str,
        trigger: str,
        scheduled: float | None = None,
        request: int | None = None,
    ) -> int:
        """Record the start of a prewarm run; Refused with code NOT_LEADER without the lease."""
        body = {"name": name, "holder": holder, "trigger": trigger, "scheduled": scheduled,
                "request": request}  # fmt: skip
        return int(self.call("POST", "prewarm/runs", json=body)["id"])

    def finish_run(self, run_id: int, result: dict[str, Any]) -> None:
        """Record a prewarm run's result."""
        self.call("PUT", f"prewarm/runs/{run_id}", json=result)

    def runs(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Recent prewarm runs, newest first."""
        params: dict[str, Any] = {"limit": limit, **({"name": name} if name else {})}
        return list(_items(self.call("GET", "prewarm/runs", params=params), "runs"))

    def prewarm_status(self) -> dict[str, Any]:
        """The scheduler, its schedules (next run, last result), the limits and queued runs."""
        return self.call("GET", "prewarm")


def _refusal(what: str, resp: requests.Response, body: Any) -> CacheAPIError:
    """The error an error answer means, from the first of its OCI errors."""
    err = (body.get("errors") or [{}])[0] if isinstance(body, dict) else {}
    err = err if isinstance(err, dict) else {}
    code, message = str(err.get("code", "")), str(err.get("message") or resp.text[:200])
    if resp.status_code == 401:
        return Unauthorized(what, 401, code, "the admin token was refused", reason=UNAUTHORIZED)
    if resp.status_code == 404 and not code:
        # the admin API answers every 404 with an OCI error: this is another server
        plain = "" if body is not None else " with something not JSON"
        reason = (
            f"{resp.url} answered HTTP 404 {resp.reason}{plain}, not the cache's admin API: "
            "is the URL the NIC cache's?"
        )
        return BadAnswer(reason, what)
    kind = NotFound if resp.status_code == 404 else Refused
    return kind(what, resp.status_code, code, message, err.get("detail"))


def check_url(url: str) -> str:
    """`url` without a trailing slash; BadURL unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadURL(f"{url!r} is not a cache URL: write http://HOST:PORT, e.g. http://198.18.1.1:5000")
    return url.rstrip("/")


def transport_reason(exc: requests.RequestException, timeout: float | None = None) -> str:
    """Why a request got no answer, in a few words (requests' own text runs to a paragraph)."""
    text = str(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return f"no answer within {timeout or '?'} s (is the NIC up, and the address right?)"
    if isinstance(exc, requests.ReadTimeout):
        return f"it accepted the connection but did not answer within {timeout or '?'} s"
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return "that is not a URL"
    for needle, reason in (
        ("Connection refused", "connection refused (is the cache running, on that port?)"),
        ("Name or service not known", "unknown host name"),
        ("Failed to resolve", "unknown host name"),
        ("No route to host", "no route to host (is the NIC up, and the address right?)"),
        ("Network is unreachable", "network unreachable"),
        ("timed out", "no answer (timed out)"),
    ):
        if needle in text:
            return reason
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _items(doc: dict[str, Any], key: str) -> list[Any]:
    items = doc.get(key)
    if not isinstance(items, list):
        raise BadAnswer(f"the cache's answer has no list {key!r}")
    return items
