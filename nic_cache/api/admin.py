"""The admin API (JSON, bearer token), health and metrics.

Prewarming: `GET /popular` ranks images, `GET /predicted` lists what the eviction policy
expects to be pulled soon; a prewarm scheduler holds its lease with
`POST /prewarm/heartbeat`, records runs with `POST /prewarm/runs` and `PUT /prewarm/runs/<id>`;
operators read `GET /prewarm` and ask for a run with `POST /prewarm/<name>/run`.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, jsonify, request

from .. import predicted as predicted_plan
from ..credentials import from_registry_auth
from ..errors import NameInvalid, Unauthorized
from ..images import delete_image, list_images
from ..policy import prewarm as prewarm_choice
from ..prewarm.footprint import footprint
from ..prewarm.state import NAME_RE
from ..reference import parse_image
from ..services import services
from ..units import parse_duration

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


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise NameInvalid(f'"{key}" must be true or false')
    return value


MAX_SECONDS = 86400.0  # no wait, ttl or time offset an admin call takes is longer
MAX_INT = 2**63 - 1  # SQLite's integers


def _number(data: dict[str, Any], key: str, default: float, maximum: float = MAX_SECONDS) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise NameInvalid(f'"{key}" must be a number from 0 to {maximum:g}')
    return float(value)


def _query(name: str, default: str, parse: Any) -> Any:
    text = request.args.get(name, default)
    try:
        return parse(text)
    except ValueError as exc:
        raise NameInvalid(f"query parameter {name}: {exc}") from exc


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise ValueError(f"need a whole number below 10^9, got {text[:20]!r}")
    return int(text)


@bp.post("/prefetch")
def prefetch() -> tuple[Response, int]:
    """Fill an image (manifests and blobs for the platforms); wait at most `wait` seconds.

    `"priority": "background"` (prewarm) uses the shared budget (`"limits"`, default: the
    registered prewarm file's) and gives way to live misses; `"pin": true` pins the image
    (held by `"schedule"` if given); `"dry_run": true` only lists its blobs and which are
    missing; `"transcode": false` keeps the image's layers as pushed (a function opted out).
    """
    data = _body()
    image = data.get("image")
    if not isinstance(image, str):
        raise NameInvalid('"image" must be an image reference string')
    platforms = data.get("platforms")
    if platforms is not None and (
        not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms)
    ):
        raise NameInvalid('"platforms" must be a list like ["linux/amd64"]')
    wait = _number(data, "wait", 600)
    priority = data.get("priority", "live")
    if priority not in ("live", "background"):
        raise NameInvalid('"priority" must be "live" or "background"')
    schedule = data.get("schedule")
    if schedule is not None and (not isinstance(schedule, str) or not NAME_RE.fullmatch(schedule)):
        raise NameInvalid('"schedule" must be a prewarm schedule name')
    limits = data.get("limits")
    if limits is not None and not (
        isinstance(limits, dict) and set(limits) <= {"concurrency", "bandwidth"}
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in limits.values())
    ):  # fmt: skip
        raise NameInvalid('"limits" must be {"concurrency": n, "bandwidth": bits/s}')
    wanted = tuple(platforms) if platforms else None
    registry_auth = data.get("registry_auth")
    if registry_auth is not None:  # the VM's credential (OpenFaaS registryAuth): it must read the image
        if not isinstance(registry_auth, str):
            raise NameInvalid('"registry_auth" must be base64 of user:password')
        route, _ = services().prefetcher.route_for(image)
        services().access.check_repository(route, from_registry_auth(registry_auth))
    if _flag(data, "dry_run"):
        return jsonify(services().prefetcher.plan(image, platforms=wanted)), 200
    transcode = data.get("transcode", True)
    if not isinstance(transcode, bool):
        raise NameInvalid('"transcode" must be true or false')
    if not transcode:  # a function's annotation opted its image out of re-encoded layers
        services().transcoder.index.opt_out(str(parse_image(image)))
    progress = services().prefetcher.start(
        image,
        platforms=wanted,
        wait=wait,
        background=priority == "background",
        limits=limits,
        pin=_flag(data, "pin"),
        owner=f"schedule:{schedule}" if schedule else "api",
        opted_out=not transcode,
    )
    status = {"done": 200, "running": 202}.get(progress.state, 502)
    return jsonify(progress.as_dict()), status


@bp.get("/images")
def images() -> Response:
    """Every cached image with how much of it is stored."""
    svc = services()
    tc = svc.transcoder
    out = [
        {
            **asdict(i),
            "complete": i.complete,
            "variant": tc.stored_variant(i.digest) if i.digest else None,
            "variant_state": tc.variant_state(i.digest) if i.digest else "none",
        }
        for i in list_images(svc.store)
    ]
    return jsonify({"images": out})


@bp.delete("/images/<path:ref>")
def delete(ref: str) -> Response:
    """Forget an image and delete the blobs no other cached image needs."""
    image = parse_image(ref)
    gone = delete_image(services().store, image)
    services().prewarm.drop_pins(str(image))
    return jsonify({"deleted": gone})


@bp.get("/stats")
def stats() -> Response:
    """Store usage and the request counters of all workers."""
    svc = services()
    used, count = svc.store.usage()
    return jsonify(
        {
            "store": {"bytes": used, "blobs": count, "capacity": svc.config.capacity},
            "metrics": svc.metrics.snapshot(),
        }
    )


@bp.post("/evict")
def evict() -> Response:
    """Run eviction now (the policy `eviction:` names)."""
    return jsonify({"evicted": services().store.evict()})


@bp.post("/events/deploy")
def deploy_event() -> Response:
    """Record a deploy reported by the hook, for popularity. The client is `vm` if given, else
    the caller's address: the hook omits `vm`, so a VM's deploys and pulls are one client."""
    data = _body()
    image = data.get("image")
    if not isinstance(image, str):
        raise NameInvalid('"image" must be an image reference string')
    ref = parse_image(image)
    vm = data.get("vm") or request.remote_addr
    services().store.log_pull(str(ref), ref.digest, str(vm) if vm else None, kind="deploy")
    return jsonify({"recorded": str(ref)})


@bp.get("/events/deploys")
def deploy_events() -> Response:
    """Deploys the hooks reported after `after` (a time this endpoint gave), except those of
    `vm`, waiting up to `wait` seconds (at most 60) for one: the prepull fan-out's feed. Without
    `after`, answers at once with no events and the cursor to start from."""
    svc = services()
    vm = request.args.get("vm")
    if "after" not in request.args:
        return jsonify({"events": [], "next": svc.store.clock()})
    after = _query("after", "0", float)
    deadline = time.monotonic() + min(_query("wait", "0", parse_duration), 60.0)
    while True:
        rows = [r for r in svc.store.pulls(since=after) if r.kind == "deploy" and r.ts > after]
        events = [{"image": r.image, "vm": r.client, "ts": r.ts} for r in rows if r.client != vm]
        if events or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return jsonify({"events": events, "next": max([after, *(r.ts for r in rows)])})


@bp.get("/popular")
def popular() -> Response:
    """Images ranked by decayed pulls + deploys: `?limit=20&window=7d&half_life=1d&min_pulls=0`."""
    return jsonify(popular_images(
        limit=_query("limit", "20", _count), window=_query("window", "7d", parse_duration),
        half_life=_query("half_life", "1d", parse_duration), min_pulls=_query("min_pulls", "0", _count),
    ))  # fmt: skip


def popular_images(*, limit: int, window: float, half_life: float, min_pulls: int) -> dict[str, Any]:
    """The ranking `/popular` answers (also on the status page)."""
    svc = services()
    now = svc.store.clock()
    ranked = prewarm_choice.popular(
        svc.store.pulls(since=now - window), now=now, half_life=half_life, window=window,
        limit=limit, min_uses=min_pulls, registries=svc.upstreams.names(),
    )  # fmt: skip
    images = []
    for p in ranked:
        size, cached = footprint(svc.store, p.image)
        images.append({
            "image": p.image, "score": round(p.score, 6), "pulls": p.pulls, "deploys": p.deploys,
            "vms": p.clients, "last_seen": p.last_seen, "size": size, "cached": cached,
        })  # fmt: skip
    return {"now": now, "window": window, "half_life": half_life, "images": images}


@bp.get("/predicted")
def predicted() -> Response:
    """Images the eviction policy expects to be pulled within `horizon`, not yet stored:
    `?budget=2GiB&horizon=30m` (the prewarm `predicted:` source fills them)."""
    req = predicted_plan.parse_request(request.args)
    return jsonify(predicted_plan.plan(services().store, services().config.eviction, req))


@bp.get("/prewarm")
def prewarm() -> Response:
    """The scheduler, its schedules (next run, last result), the limits and queued runs."""
    return jsonify(services().prewarm.snapshot())


@bp.post("/prewarm/heartbeat")
def prewarm_heartbeat() -> Response:
    """A scheduler takes or renews the lease and registers its schedules; it gets the runs
    asked for since its last heartbeat if it is the leader."""
    data = _body()
    holder = data.get("holder")
    if not isinstance(holder, str) or not holder:
        raise NameInvalid('"holder" must name the scheduler')
    ttl = _number(data, "ttl", 15)
    registration = data.get("registration")
    if registration is not None and not isinstance(registration, dict):
        raise NameInvalid('"registration" must be an object')
    return jsonify(services().prewarm.heartbeat(holder, max(ttl, 1.0), registration))


@bp.delete("/prewarm/lease")
def prewarm_release() -> Response:
    """A scheduler gives its lease up (`?holder=`)."""
    return jsonify({"released": services().prewarm.release(request.args.get("holder", ""))})


@bp.post("/prewarm/runs")
def prewarm_start_run() -> tuple[Response, int]:
    """Start a run: `{"name", "holder", "trigger", "scheduled"?, "request"?}`; 409 NOT_LEADER
    unless the holder has the lease (manual runs excepted)."""
    data = _body()
    name, holder, trigger = data.get("name"), data.get("holder"), data.get("trigger", "manual")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise NameInvalid('"name" must be a prewarm schedule name')
    if not isinstance(holder, str) or not isinstance(trigger, str):
        raise NameInvalid('"holder" and "trigger" must be strings')
    scheduled, req = data.get("scheduled"), data.get("request")
    if scheduled is not None:
        scheduled = _number(data, "scheduled", 0, maximum=1e12)
    if req is not None and (isinstance(req, bool) or not isinstance(req, int) or not 0 <= req <= MAX_INT):
        raise NameInvalid('"request" must be a run request id')
    run_id = services().prewarm.start_run(
        name, holder=holder, trigger=trigger, scheduled=scheduled, request=req
    )
    return jsonify({"id": run_id}), 201


@bp.put("/prewarm/runs/<int:run_id>")
def prewarm_finish_run(run_id: int) -> Response:
    """Record a run's result (what it fetched, bytes, seconds, errors)."""
    if run_id > MAX_INT:
        raise NameInvalid(f"run id {str(run_id)[:20]}... is out of range")
    services().prewarm.finish_run(run_id, _body())
    return jsonify({"id": run_id})


@bp.get("/prewarm/runs")
def prewarm_runs() -> Response:
    """Recent runs, newest first: `?name=&limit=50`."""
    limit = _query("limit", "50", _count)
    return jsonify({"runs": services().prewarm.runs(request.args.get("name"), limit)})


@bp.post("/prewarm/<name>/run")
def prewarm_run(name: str) -> tuple[Response, int]:
    """Ask the scheduler to run a schedule now; `{"wait": s}` waits for the result (200) or
    answers 202 with the request's state. 404 for an unknown schedule, 503 with no scheduler."""
    data = request.get_json(silent=True) or {}
    if not isinstance(data, dict):
        raise NameInvalid("request body must be a JSON object")
    wait = _number(data, "wait", 0)
    state = services().prewarm
    req = state.request_run(name)
    deadline = time.monotonic() + wait
    status = state.request_status(req)
    while status["state"] in ("queued", "claimed", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        status = state.request_status(req)
    return jsonify(status), 202 if status["state"] in ("queued", "claimed", "running") else 200


@ops.get("/healthz")
def healthz() -> Response:
    """Liveness: the index answers."""
    used, _ = services().store.usage()
    return jsonify({"status": "ok", "store_bytes": used})


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition, aggregated over all workers."""
    return Response(services().metrics.exposition(), content_type="text/plain; version=0.0.4")
