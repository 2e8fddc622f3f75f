"""The app factory: builds the services and registers the blueprints and error handler.

Nothing happens at import time. Under gunicorn each worker process calls the factory
(`nic_cache.app:from_env()`), so anything built here exists once per worker; cross-worker
coordination lives on disk (flock + SQLite), never in memory.
"""

from __future__ import annotations

import functools
import json
import logging
import os

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .access import TOKEN_PATH, Access
from .api import admin, registry, status
from .config import Config, load_config_file
from .errors import RangeNotSatisfiable, RegistryError, Unauthorized
from .fill import Fills
from .metrics import Metrics
from .policy import make_policy
from .prefetch import Prefetcher
from .prewarm.budget import Budget
from .prewarm.state import PrewarmState
from .proxy import Mirror
from .services import Services, services
from .store import Store
from .transcoder import Transcoder
from .upstream import Upstreams

log = logging.getLogger(__name__)


def create_app(
    config: Config, *, store: Store | None = None, upstreams: Upstreams | None = None
) -> Flask:
    """Build a cache app for `config`; `store`/`upstreams` may be injected by tests."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = store or open_store(config)
    upstreams = upstreams or Upstreams(config)
    metrics = Metrics(store)
    store.on_index_error = metrics.index_write_errors.inc
    store.on_evicted = metrics.count_eviction
    fills = Fills(
        store,
        wait_timeout=config.connect_timeout * (config.retries + 1) + config.read_timeout,
        on_fetched=metrics.bytes_upstream.inc,
        on_inflight=metrics.fills_in_flight.inc,
    )
    access = Access(config, store, upstreams)
    mirror = Mirror(config, store, upstreams, fills,
                    on_passthrough=lambda reason: metrics.passthrough.labels(reason).inc(),
                    on_manifest=access.record)  # fmt: skip
    prewarm = PrewarmState(store)
    transcoder = Transcoder(store, config.transcode, on_layer=metrics.count_transcode)
    prefetcher = Prefetcher(
        mirror, platforms=config.platforms, budget=Budget(fills, prewarm.limits),
        record_pin=prewarm.record_pin, on_filled=transcoder.submit,
    )
    app.extensions["nic_cache"] = Services(
        config=config, store=store, upstreams=upstreams, fills=fills, mirror=mirror,
        prefetcher=prefetcher, metrics=metrics, prewarm=prewarm, access=access,
        transcoder=transcoder,
    )
    app.register_blueprint(registry.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin.ops)
    app.register_blueprint(status.bp)
    app.register_error_handler(RegistryError, _registry_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    app.after_request(_count_request)
    return app


def open_store(config: Config) -> Store:
    """The store `config` describes."""
    return Store(
        config.data_dir, capacity=config.capacity, low_watermark=config.low_watermark,
        pull_log_max_age=config.pull_log_max_age, pull_log_max_rows=config.pull_log_max_rows,
        policy=functools.partial(make_policy, config.eviction.policy, **config.eviction.params),
    )


def from_env() -> Flask:
    """The gunicorn entry point: config file from `NIC_CACHE_CONFIG`."""
    logging.basicConfig(level=os.environ.get("NIC_CACHE_LOG_LEVEL", "INFO"))
    return create_app(load_config_file(os.environ.get("NIC_CACHE_CONFIG", "nic-cache.yml")))


def _registry_error(exc: RegistryError) -> Response:
    resp = Response(status=exc.status, content_type="application/json")
    resp.set_data(_json(exc.to_json()))
    resp.headers["Docker-Distribution-API-Version"] = "registry/2.0"
    if isinstance(exc, Unauthorized) and request.path.startswith("/api/"):
        resp.headers["WWW-Authenticate"] = 'Bearer realm="nic-cache admin"'
    elif isinstance(exc, Unauthorized):  # a registry client: the token flow (access.py)
        realm = request.host_url.rstrip("/") + TOKEN_PATH
        resp.headers["WWW-Authenticate"] = f'Bearer realm="{realm}",service="nic-cache"'
    if isinstance(exc, RangeNotSatisfiable) and isinstance(exc.detail, dict):
        resp.headers["Content-Range"] = f"bytes */{exc.detail.get('size')}"
    return resp


def _http_error(exc: HTTPException) -> Response:
    code = {404: "NOT_FOUND", 405: "UNSUPPORTED"}.get(exc.code or 500, "UNKNOWN")
    resp = Response(status=exc.code or 500, content_type="application/json")
    resp.set_data(_json({"errors": [{"code": code, "message": exc.description or exc.name}]}))
    return resp


def _internal_error(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    resp = Response(status=500, content_type="application/json")
    resp.set_data(_json({"errors": [{"code": "UNKNOWN", "message": f"internal error: {exc}"}]}))
    return resp


def _json(obj: object) -> str:
    return json.dumps(obj)


def _count_request(resp: Response) -> Response:
    path = request.path
    kind = next((k for k in ("manifests", "blobs", "tags") if f"/{k}/" in path), "other")
    services().metrics.requests.labels(kind, request.method, str(resp.status_code)).inc()
    return resp
