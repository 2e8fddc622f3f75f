"""The admin API (JSON, bearer token), health and metrics."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import NameInvalid, Unauthorized
from ..images import delete_image, list_images
from ..reference import parse_image
from ..services import services

bp = Blueprint("admin", __name__, url_prefix="/api/v1")
ops = Blueprint("ops", __name__)


@bp.before_request
def require_token() -> None:
    """Every admin call carries `Authorization: Bearer <admin_token>`."""
    token = services().config.admin_token
    if token is None:
        raise Unauthorized("the admin API is disabled: set admin_token in the config")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("missing or wrong admin bearer token")


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise NameInvalid("request body must be a JSON object")
    return data


@bp.post("/prefetch")
def prefetch() -> tuple[Response, int]:
    """Fill an image (manifests and blobs for the platforms); wait at most `wait` seconds."""
    data = _body()
    image = data.get("image")
    if not isinstance(image, str):
        raise NameInvalid('"image" must be an image reference string')
    platforms = data.get("platforms")
    if platforms is not None and (
        not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms)
    ):
        raise NameInvalid('"platforms" must be a list like ["linux/amd64"]')
    wait = data.get("wait", 600)
    if not isinstance(wait, int | float) or wait < 0:
        raise NameInvalid('"wait" must be a number of seconds >= 0')
    progress = services().prefetcher.start(
        image, platforms=tuple(platforms) if platforms else None, wait=float(wait)
    )
    status = {"done": 200, "running": 202}.get(progress.state, 502)
    return jsonify(progress.as_dict()), status


@bp.get("/images")
def images() -> Response:
    """Every cached image with how much of it is stored."""
    out = [{**asdict(i), "complete": i.complete} for i in list_images(services().store)]
    return jsonify({"images": out})


@bp.delete("/images/<path:ref>")
def delete(ref: str) -> Response:
    """Forget an image and delete the blobs no other cached image needs."""
    gone = delete_image(services().store, parse_image(ref))
    return jsonify({"deleted": gone})


@bp.get("/stats")
def stats() -> Response:
    """Store usage and the request counters of all workers."""
    svc = services()
    used, count = svc.store.usage()
    return jsonify({
        "store": {"bytes": used, "blobs": count, "capacity": svc.config.capacity},
        "metrics": svc.metrics.snapshot(),
    })


@bp.post("/evict")
def evict() -> Response:
    """Run LRU eviction now."""
    return jsonify({"evicted": services().store.evict()})


@bp.post("/events/deploy")
def deploy_event() -> Response:
    """Record a deploy reported by the hook, for popularity."""
    data = _body()
    image = data.get("image")
    if not isinstance(image, str):
        raise NameInvalid('"image" must be an image reference string')
    ref = parse_image(image)
    vm = data.get("vm") or request.remote_addr
    services().store.log_pull(str(ref), ref.digest, str(vm) if vm else None, kind="deploy")
    return jsonify({"recorded": str(ref)})


@ops.get("/healthz")
def healthz() -> Response:
    """Liveness: the index answers."""
    used, _ = services().store.usage()
    return jsonify({"status": "ok", "store_bytes": used})


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over all workers."""
    return Response(services().metrics.exposition(), content_type="text/plain; version=0.0.4")
