"""The faas-provider HTTP API under `/system/*` (basic auth) and `/healthz` (open).

Each view parses the request, calls the `Provider`, renders JSON. Errors are plain text,
as faasd writes them; see `app.py` for the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST

from .. import __version__
from . import phases
from .auth import REALM_HEADER, Credentials
from .config import ProviderConfig
from .errors import InvalidRequest
from .metrics import DeployMetrics
from .model import (
    NAMESPACE,
    check_name,
    check_namespace,
    format_time,
    parse_delete,
    parse_deployment,
    parse_scale,
    parse_time,
)
from .secrets import SecretStore, parse_secret
from .service import Provider

if TYPE_CHECKING:
    from .asyncq import AsyncQueue

EXTENSION = "faas_accel_provider"
PROVIDER_NAME = "faas-accel-provider"

bp = Blueprint("system", __name__)
health_bp = Blueprint("health", __name__)


@dataclass(frozen=True)
class Services:
    """What `create_app` builds, kept in `app.extensions[EXTENSION]`."""

    provider: Provider
    config: ProviderConfig
    credentials: Credentials | None
    session: requests.Session  # for proxied invocations
    secrets: SecretStore
    calls: AsyncQueue  # /async-function/ invocations
    metrics: DeployMetrics


def services() -> Services:
    found: Services = current_app.extensions[EXTENSION]
    return found


@bp.before_request
def require_auth() -> Response | None:
    credentials = services().credentials
    if credentials is None or credentials.check(request.authorization):
        return None
    return Response(
        "invalid credentials",
        401,
        headers={"WWW-Authenticate": REALM_HEADER},
        content_type="text/plain; charset=utf-8",
    )


@bp.get("/system/functions")
def list_functions() -> Response:
    check_namespace(request.args.get("namespace"))
    return jsonify(services().provider.list())


@bp.post("/system/functions")
def deploy() -> Response:
    check_namespace(request.args.get("namespace"))
    deployment = parse_deployment(request.get_data())
    services().provider.deploy(deployment)
    return _deployed(deployment.service)


@bp.put("/system/functions")
def update() -> Response:
    check_namespace(request.args.get("namespace"))
    deployment = parse_deployment(request.get_data())
    services().provider.update(deployment)
    return _deployed(deployment.service)


def _deployed(name: str) -> Response:
    """200, with the deploy's phases in a Server-Timing header (see phases.py)."""
    response = Response(status=200)
    timed = services().provider.last_phases(name)
    if timed is not None:
        response.headers[phases.HEADER] = phases.server_timing(*timed)
    return response


@bp.delete("/system/functions")
def delete() -> Response:
    check_namespace(request.args.get("namespace"))
    name, _ = parse_delete(request.get_data())
    services().provider.delete(name)
    return Response(status=200)


@bp.get("/system/function/<name>")
def describe(name: str) -> Response:
    check_namespace(request.args.get("namespace"))
    return jsonify(services().provider.describe(check_name(name, "function name")))


@bp.post("/system/scale-function/<name>")
def scale(name: str) -> Response:
    check_namespace(request.args.get("namespace"))
    replicas = parse_scale(request.get_data())
    services().provider.scale(check_name(name, "function name"), replicas)
    return Response(status=200)


@bp.get("/system/info")
def info() -> Response:
    return jsonify(
        {
            "provider": PROVIDER_NAME,
            "orchestration": services().provider.runtime.name,
            "version": {"sha": "", "release": __version__, "commit_message": ""},
        }
    )


@bp.get("/system/namespaces")
def namespaces() -> Response:
    return jsonify([NAMESPACE])


@bp.get("/system/logs")
def logs() -> Response:
    args = request.args
    name = check_name(args.get("name"), "name")
    namespace = check_namespace(args.get("namespace"))
    since = parse_time(args["since"]) if args.get("since") else None
    tail = _int_arg("tail")
    follow = _bool_arg("follow")
    lines = services().provider.logs(
        name, since=since, tail=None if tail is None or tail < 0 else tail, follow=follow
    )

    def render() -> Iterator[bytes]:
        try:
            yield b""  # sends the headers now: a follow may be quiet for long
            for line in lines:
                if line is None:
                    yield b"\n"  # idle keep-alive: JSON decoders skip whitespace between values
                    continue
                doc: dict[str, Any] = {
                    "name": name,
                    "namespace": namespace,
                    "instance": line.instance,
                    "timestamp": format_time(line.time),
                    "text": line.text,
                }
                yield json.dumps(doc).encode() + b"\n"
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()  # a client that went away ends the follow (and its docker stream) now

    return Response(render(), content_type="application/x-ndjson")


@bp.get("/system/secrets")
def list_secrets() -> Response:
    namespace = check_namespace(request.args.get("namespace"))
    return jsonify([{"name": n, "namespace": namespace} for n in services().secrets.names(namespace)])


@bp.post("/system/secrets")
def create_secret() -> Response:
    secret = parse_secret(request.get_data(), request.args.get("namespace"))
    services().secrets.create(secret)
    return Response(status=201)


@bp.put("/system/secrets")
def update_secret() -> Response:
    secret = parse_secret(request.get_data(), request.args.get("namespace"))
    services().secrets.update(secret)
    return Response(status=200)


@bp.delete("/system/secrets")
def delete_secret() -> Response:
    secret = parse_secret(request.get_data(), request.args.get("namespace"))
    services().secrets.delete(secret.namespace, secret.name)
    return Response(status=200)


@health_bp.get("/healthz")
def healthz() -> Response:
    return Response("OK", content_type="text/plain; charset=utf-8")


@health_bp.get("/metrics")
def metrics() -> Response:
    return Response(services().metrics.render(), content_type=CONTENT_TYPE_LATEST)


def _int_arg(key: str) -> int | None:
    value = request.args.get(key)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidRequest(f"{key} must be an integer, got {value!r}") from exc


def _bool_arg(key: str) -> bool:
    value = (request.args.get(key) or "false").lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise InvalidRequest(f"{key} must be true or false, got {value!r}")
