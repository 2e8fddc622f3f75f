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

import requests
from flask import Blueprint, Response, request

from ..httpstream import HOP_BY_HOP, forward_headers, request_body, response_chunks
from .api import services
from .errors import ProviderError
from .model import check_namespace

log = logging.getLogger("faas_accel.provider.proxy")
bp = Blueprint("proxy", __name__)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATH_SAFE = "/:@!$&'()*+,;=~"


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
    headers = forward_headers(request.headers)
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    headers.setdefault("X-Forwarded-Host", request.host)
    try:
        upstream = wiring.session.request(
            request.method,
            url,
            data=request_body(),
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
        response_chunks(upstream), status=upstream.status_code, headers=out_headers, direct_passthrough=True
    )
    length = upstream.headers.get("Content-Length")
    if length is not None:
        response.headers["Content-Length"] = length
    return response
