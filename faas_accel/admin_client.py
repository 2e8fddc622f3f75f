"""Talking to the NIC cache's admin API from a command line: one readable line per failure.

A wrong `--url` (not a URL, nothing listening, a host that does not answer, a server that is
not the cache), a wrong token, or an error answer all become an `AdminError` whose message
fits on one line and says what to check; the CLIs print it and exit 1.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests


class AdminError(Exception):
    """The admin API could not be used; the message is one line for the user."""


def check_url(url: str) -> str:
    """`url` without a trailing slash; AdminError unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AdminError(f"{url!r} is not a cache URL: write http://HOST:PORT, e.g. http://198.18.1.1:5000")
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


def answer_error(resp: requests.Response, body: Any) -> str:
    """One line for an error answer of the admin API (or of something that is not it)."""
    if resp.status_code == 401:
        return "the cache refused the admin token (401): pass --token or set NIC_CACHE_ADMIN_TOKEN"
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors or not isinstance(errors, list) or not isinstance(errors[0], dict):
        what = "" if body is not None else " with something not JSON"
        return (
            f"{resp.url} answered HTTP {resp.status_code} {resp.reason}{what}, not the cache's admin API: "
            "is the URL the NIC cache's?"
        )
    first = errors[0]
    return f"{resp.status_code} {first.get('code', '')}: {first.get('message', '')}".strip()


def call(
    session: requests.Session | None,
    method: str,
    url: str,
    path: str,
    *,
    timeout: float = 30,
    ok: tuple[int, ...] = (),
    **kw: Any,
) -> Any:
    """`METHOD <url>/api/v1/<path>` as JSON; AdminError for anything else. Statuses in `ok`
    (e.g. 502 for a prefetch that failed upstream) return their body like a success."""
    base = check_url(url)
    http = session or requests.Session()
    connect = min(timeout, 10.0)
    try:
        resp = http.request(method, f"{base}/api/v1/{path}", timeout=(connect, timeout), **kw)
    except requests.RequestException as exc:
        waited = connect if isinstance(exc, requests.ConnectTimeout) else timeout
        raise AdminError(f"cannot reach the NIC cache at {base}: {transport_reason(exc, waited)}") from exc
    finally:
        if session is None:
            http.close()
    try:
        body = resp.json()
    except ValueError:
        body = None
    if (resp.status_code >= 400 and resp.status_code not in ok) or not isinstance(body, dict):
        raise AdminError(answer_error(resp, body))
    return body
