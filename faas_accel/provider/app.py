"""`create_app`: the provider's Flask app, and `from_env` for gunicorn.

State lives in this process (records, locks, invocation counts), so the provider runs as
ONE gunicorn worker with threads; `cli.py` enforces that.
"""

from __future__ import annotations

import functools
import logging
import os

import requests
import requests.adapters
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .api import EXTENSION, Services, health_bp
from .api import bp as system_bp
from .asyncq import AsyncQueue, deliver
from .asyncq import bp as async_bp
from .auth import load_credentials
from .config import ProviderConfig
from .errors import ProviderError
from .metrics import DeployMetrics
from .model import NAMESPACE
from .proxy import bp as proxy_bp
from .runtime import Runtime
from .secrets import SecretStore
from .service import Provider
from .store import FunctionStore

log = logging.getLogger("faas_accel.provider")
CONFIG_ENV = "FAAS_ACCEL_PROVIDER_CONFIG"


def make_runtime(config: ProviderConfig) -> Runtime:
    """The runtime `config` names (the docker SDK is imported only when asked for)."""
    if config.runtime == "docker":
        from .docker_runtime import DockerRuntime

        return DockerRuntime(config.address, pull_timeout=config.pull_timeout, stop_grace=config.stop_grace)
    from .containerd import ContainerdRuntime

    return ContainerdRuntime(
        config.address,
        config.namespace,
        state_dir=config.state_dir,
        hosts_dir=config.hosts_dir,
        ctr=config.ctr,
        pull_timeout=config.pull_timeout,
        stop_grace=config.stop_grace,
    )


def create_app(config: ProviderConfig, *, runtime: Runtime | None = None) -> Flask:
    """The provider app for `config`; re-adopts the functions recorded in its state dir."""
    app = Flask(__name__)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    credentials = (
        load_credentials(config.auth_user, config.auth_password_file) if config.auth_password_file else None
    )
    store = FunctionStore(config.state_dir / "functions.json", config.port_range)
    secrets = SecretStore(config.state_dir / "secrets")
    metrics = DeployMetrics()
    provider = Provider(
        runtime or make_runtime(config),
        store,
        secrets_dir=secrets.root / NAMESPACE,
        ready_timeout=config.ready_timeout,
        on_deployed=metrics.observe,
    )
    provider.adopt()
    session = requests.Session()
    session.trust_env = False  # invocations go to 127.0.0.1, never through a proxy
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=64)
    session.mount("http://", adapter)
    run = functools.partial(
        deliver, endpoint=provider.endpoint, count=provider.count_invocation, session=session,
        timeout=config.invoke_timeout,
    )  # fmt: skip
    calls = AsyncQueue(run, workers=config.async_workers, max_queued=config.async_queue)
    app.extensions[EXTENSION] = Services(provider, config, credentials, session, secrets, calls, metrics)
    app.register_blueprint(system_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(proxy_bp)
    app.register_blueprint(async_bp)
    app.register_error_handler(ProviderError, _provider_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
    return app


def _text(message: str, status: int) -> Response:
    # what Go's http.Error writes
    response = Response(message + "\n", status, content_type="text/plain; charset=utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _provider_error(exc: ProviderError) -> Response:
    if exc.status >= 500:
        log.error("%s", exc)
    return _text(str(exc), exc.status)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    return _text(f"{status} {(exc.name or 'error').lower()}", status)


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error")
    return _text(f"internal error: {exc}", 500)


def from_env() -> Flask:
    """The gunicorn entry point: the configuration JSON in FAAS_ACCEL_PROVIDER_CONFIG."""
    logging.basicConfig(
        level=os.environ.get("FAAS_ACCEL_PROVIDER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return create_app(ProviderConfig.from_json(os.environ[CONFIG_ENV]))
