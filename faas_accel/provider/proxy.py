"""`/function/<name>[/<path>]`: any method, streamed both ways to the function's port.

No auth, as in faasd. The request body streams with its length when the client sent one
(some function servers cannot read chunked bodies), chunked otherwise; the response
streams back as it arrives, bytes untouched. Errors follow faas-provider's proxy: 503
"No endpoints available for: <name>." when nothing runs, 500 "Can't reach service for:
<name>." when the function does not answer.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests
from flask import Blueprint, Response, request

from .api import services
from .errors import ProviderError
from .model import check_namespace

log = logging.getLogger("faas_accel.provider.proxy")
bp = Blueprint("proxy", __name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CHUNK = 65536
PATH_SAFE = "/:@!$&'()*+,;=~"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@bp.route("/function/<name>", defaults={"path": ""}, methods=METHODS, strict_slashes=False)
@bp.route("/function/<name>/<path:path>", methods=METHODS)
def invoke(name: str, path: str) -> Response:
    name, _, namespace = name.partition(".")
    check_namespace(namespace or None)
    wiring = services()
    port = wiring.provider.endpoint(name)
    url = f"http://127.0.0.1:{port}/{urllib.parse.quote(path, safe=PATH_SAFE)}"
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    headers.setdefault("X-Forwarded-Host", request.host)
    try:
        upstream = wiring.session.request(
            request.method,
            url,
            data=_body(),
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=(5, wiring.config.invoke_timeout),
        )
    except requests.RequestException as exc:
        log.warning("invoke %s: %s", name, exc)
        raise ProviderError(f"Can't reach service for: {name}.") from exc
    wiring.provider.count_invocation(name)
    out_headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
    response = Response(
        _stream(upstream), status=upstream.status_code, headers=out_headers, direct_passthrough=True
    )
    length = upstream.headers.get("Content-Length")
    if length is not None:
        response.headers["Content-Length"] = length
    return response


class _Body:
    """The request body as a file-like object with a length, so requests sends Content-Length."""

    def __init__(self, stream: Any, length: int) -> None:
        self._stream, self._length = stream, length

    def __len__(self) -> int:
        return self._length

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._stream.read(n if n is not None and n >= 0 else CHUNK)
        return data


def _body() -> Any:
    if request.content_length is not None:
        return _Body(request.stream, request.content_length) if request.content_length else None
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return iter(lambda: request.stream.read(CHUNK), b"")
    return None


def _stream(upstream: requests.Response) -> Iterator[bytes]:
    try:
        while True:
            data = upstream.raw.read1(CHUNK, decode_content=False)
            if not data:
                return
            yield data
    finally:
        upstream.close()
