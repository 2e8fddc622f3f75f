"""The read-only OCI Distribution API: parse the path, ask the mirror, render."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from flask import Blueprint, Response, jsonify, request

from ..errors import RangeNotSatisfiable, Unsupported
from ..proxy import BlobHit
from ..reference import Route, is_digest, parse_registry_path, validate_digest, validate_reference
from ..services import Services, services
from ..variants import PullContext, is_rewritten

bp = Blueprint("registry", __name__)
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
CHUNK = 1 << 20


@bp.route("/v2/", methods=["GET", "HEAD"])
def base() -> Response:
    """The API version check every client starts with."""
    return jsonify({}) if request.method == "GET" else Response(status=200)


@bp.route("/v2/<path:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def dispatch(rest: str) -> Response:
    """Route `/v2/<name>/{manifests,blobs,tags}/...` to its handler."""
    path = parse_registry_path(rest)
    if request.method not in ("GET", "HEAD"):
        raise Unsupported("this registry is a read-only mirror: only GET and HEAD are allowed")
    svc = services()
    route = svc.mirror.route(path.name, request.args.get("ns"))
    if path.kind == "tags":
        return _tags(svc, route)
    if path.kind == "manifests":
        validate_reference(path.reference)
        return _manifest(svc, route, path.reference, path.name)
    validate_digest(path.reference)
    return _blob(svc, route, path.reference)


def _manifest(svc: Services, route: Route, reference: str, name: str) -> Response:
    result = svc.mirror.manifest(route, reference, request.headers.get("Accept"))
    kind = "manifest"
    if result.source == "miss":
        svc.metrics.misses.labels(kind, route.upstream).inc()
    else:
        svc.metrics.hits.labels(kind, route.upstream).inc()
    if ":" not in reference:  # a pull starts with the tag; count it once, there
        svc.store.log_pull(
            f"{route.upstream}/{route.repository}:{reference}",
            result.digest, request.remote_addr,
        )
    variant = svc.transcoder.variant(result, _pull_context(svc, route, reference, name))
    if variant is not result:
        svc.metrics.variants_served.inc()
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


def _blob(svc: Services, route: Route, digest: str) -> Response:
    headers = {"Docker-Content-Digest": digest, "Accept-Ranges": "bytes", **API_VERSION}
    if request.method == "HEAD":
        size = svc.mirror.blob_size(route, digest)
        resp = Response(status=200, headers=headers, content_type="application/octet-stream")
        if size is not None:
            resp.content_length = size
        return resp
    got = svc.mirror.blob(route, digest)
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
    """(start, end, status) for the request's Range header against a blob of `size`."""
    header = request.headers.get("Range")
    if not header or size is None:
        return 0, size, 200
    rng = request.range
    span = rng.range_for_length(size) if rng is not None else None
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


def _tags(svc: Services, route: Route) -> Response:
    params = {k: request.args[k] for k in ("n", "last") if k in request.args}
    body, link = svc.mirror.tags(route, params)
    resp = jsonify(body)
    resp.headers.update(API_VERSION)
    if link:
        resp.headers["Link"] = link
    return resp

