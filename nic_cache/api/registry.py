"""The read-only OCI Distribution API: parse the path, check access, ask the mirror, render.

The access check (nic_cache/access.py) is its own step before the mirror is asked, for
every manifest, blob and tag list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from flask import Blueprint, Response, jsonify, request

from ..access import TOKEN_PATH
from ..credentials import Credential
from ..errors import RangeNotSatisfiable, StoreError, Unauthorized, Unsupported
from ..proxy import BlobHit, BlobPassthrough
from ..reference import Route, is_digest, parse_registry_path, validate_digest, validate_reference
from ..services import Services, services
from ..variants import PullContext, is_rewritten

log = logging.getLogger(__name__)
bp = Blueprint("registry", __name__)
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
CHUNK = 1 << 20


@bp.route("/v2/", methods=["GET", "HEAD"])
def base() -> Response:
    """The API version check every client starts with. Without credentials it answers 401
    with a Bearer challenge naming /v2/token when some upstream is not `public`, as
    registries with auth do: a client with credentials sends them there, an anonymous one
    gets an anonymous token (nic_cache/access.py)."""
    svc = services()
    if not request.headers.get("Authorization") and not all(
        u.public for u in svc.config.upstreams.values()
    ):
        raise Unauthorized("send credentials to pull private images; anonymous pulls see public ones")
    return jsonify({}) if request.method == "GET" else Response(status=200)


@bp.route(TOKEN_PATH, methods=["GET"])
def token() -> Response:
    """The token endpoint the challenges name: a token wrapping the caller's credential."""
    return jsonify(services().access.issue_token(request.headers.get("Authorization", "").strip()))


def _client() -> Credential:
    return services().access.credential(request.headers.get("Authorization", "").strip())


@bp.route("/v2/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def dispatch(rest: str) -> Response:
    """Route `/v2/<name>/{manifests,blobs,tags}/...` to its handler."""
    path = parse_registry_path(rest)
    if request.method not in ("GET", "HEAD"):
        raise Unsupported("this registry is a read-only mirror: only GET and HEAD are allowed")
    svc = services()
    route = svc.mirror.route(path.name, request.args.get("ns"))
    client = _client()
    if path.kind == "tags":
        svc.access.check_repository(route, client)
        return _tags(svc, route, client)
    if path.kind == "manifests":
        validate_reference(path.reference)
        if is_digest(path.reference):
            svc.access.check_content(route, "manifests", path.reference, client)
        else:
            svc.access.check_repository(route, client)
        return _manifest(svc, route, path.reference, path.name, client)
    validate_digest(path.reference)
    svc.access.check_content(route, "blobs", path.reference, client)
    return _blob(svc, route, path.reference, client)


def _manifest(svc: Services, route: Route, reference: str, name: str, client: Credential) -> Response:
    result = svc.mirror.manifest(route, reference, request.headers.get("Accept"), client)
    svc.access.record(route.upstream, route.repository, result.digest)
    kind = "manifest"
    if result.source == "miss":
        svc.metrics.misses.labels(kind, route.upstream).inc()
    else:
        svc.metrics.hits.labels(kind, route.upstream).inc()
    if ":" not in reference:  # a pull starts with the tag; count it once, there
        try:
            svc.store.log_pull(
                f"{route.upstream}/{route.repository}:{reference}",
                result.digest, request.remote_addr,
            )
        except StoreError as exc:  # popularity is bookkeeping: never fail the pull for it
            svc.store.on_index_error()
            log.warning("pull of %s not logged: %s", reference, exc)
    variant = svc.transcoder.variant(result, _pull_context(svc, route, reference, name))
    if variant is not result:
        svc.metrics.variants_served.inc()
        # the variant's re-encoded layers are this repository's content for this client too
        svc.access.record(route.upstream, route.repository, variant.digest)
        result = variant
    headers = {"Docker-Content-Digest": result.digest, "X-Cache": result.source, **API_VERSION}
    resp = Response(result.body, status=200, headers=headers, content_type=result.media_type)
    if request.method == "GET":
        svc.metrics.bytes_served.inc(len(result.body))
    return resp


def _pull_context(svc: Services, route: Route, reference: str, name: str) -> PullContext:
    """What decides whether this manifest request may get re-encoded layers (variants.py)."""
    upstream = svc.config.upstreams.get(route.upstream)
    return PullContext(
        by_digest=is_digest(reference),
        rewritten=is_rewritten(name, request.args.get("ns"), svc.upstreams.names()),
        user_agent=request.headers.get("User-Agent"),
        upstream_opted_out=upstream is not None and not upstream.transcode,
        image_opted_out=svc.transcoder.index.opted_out(f"{route.upstream}/{route.repository}:{reference}"),
    )


def _blob(svc: Services, route: Route, digest: str, client: Credential) -> Response:
    headers = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", **API_VERSION}
    if request.method == "HEAD":
        size = svc.mirror.blob_size(route, digest, client)
        resp = Response(status=200, headers=headers, content_type="application/octet-stream")
        if size is not None:
            resp.content_length = size
        return resp
    got = svc.mirror.blob(route, digest, client=client)
    headers["X-Cache"] = "hit" if isinstance(got, BlobHit) else "miss"  # as manifests say it
    if isinstance(got, BlobPassthrough):  # a Range may be ignored (RFC 9110 14.2): send it all
        svc.metrics.misses.labels("blob", route.upstream).inc()
        resp = Response(_counted(svc, got.chunks()), status=200, headers=headers,
                        content_type="application/octet-stream", direct_passthrough=True)  # fmt: skip
        if got.size is not None:
            resp.content_length = got.size
        return resp
    if isinstance(got, BlobHit):
        svc.metrics.hits.labels("blob", route.upstream).inc()
        size = got.size
    else:
        svc.metrics.misses.labels("blob", route.upstream).inc()
        size = got.fill.size
    try:
        start, end, status = _range(size)
    except RangeNotSatisfiable:
        if isinstance(got, BlobHit):
            os.close(got.fd)
        raise
    if status == 206 and end is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if isinstance(got, BlobHit):
        body = _file_body(got.fd, start, end)
    else:
        body = _counted(svc, svc.mirror.stream(got, start, end))
    resp = Response(body, status=status, headers=headers, content_type="application/octet-stream",
                    direct_passthrough=True)
    if end is not None:
        resp.content_length = end - start
        if isinstance(got, BlobHit):
            svc.metrics.bytes_served.inc(end - start)
    return resp


def _range(size: int | None) -> tuple[int, int | None, int]:
    """(start, end, status) for the request's Range header against a blob of `size`.

    RFC 9110 14.2: a Range header that does not parse, or that asks for several ranges
    (which this server does not send as multipart), is ignored: the whole blob, 200. Only a
    single well-formed range that misses the blob gets 416.
    """
    header = request.headers.get("Range")
    if not header or size is None:
        return 0, size, 200
    rng = request.range
    if rng is None or rng.units != "bytes" or len(rng.ranges) != 1:
        return 0, size, 200
    span = rng.range_for_length(size)
    if span is None:
        raise RangeNotSatisfiable(
            f"range {header!r} not satisfiable for {size} bytes", detail={"size": size}
        )
    return span[0], span[1], 206


def _file_body(fd: int, start: int, end: int | None) -> Iterable[bytes]:
    fh = os.fdopen(fd, "rb")
    fh.seek(start)
    wrapper = request.environ.get("wsgi.file_wrapper")
    if wrapper is not None:  # gunicorn: sendfile(2) of exactly Content-Length bytes
        wrapped: Iterable[bytes] = wrapper(fh, CHUNK)
        return wrapped
    return _limited(fh, start, end)


def _limited(fh: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with fh:
        left = None if end is None else end - start
        while left is None or left > 0:
            data = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not data:
                return
            if left is not None:
                left -= len(data)
            yield data


def _counted(svc: Services, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        svc.metrics.bytes_served.inc(len(chunk))
        yield chunk


def _tags(svc: Services, route: Route, client: Credential) -> Response:
    params = {k: request.args[k] for k in ("n", "last") if k in request.args}
    body, link = svc.mirror.tags(route, params, client)
    resp = jsonify(body)
    resp.headers.update(API_VERSION)
    if link:
        resp.headers["Link"] = link
    return resp

