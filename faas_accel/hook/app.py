"""The hook: a faas-provider API reverse proxy that sends every deploy through the NIC cache.

Every route is forwarded unchanged (status, headers, `Authorization`, query, streaming bodies
both ways). `POST|PUT /system/functions` is looked at first: the deploy is reported to the
cache, the image prefetched with a bounded wait and rewritten to the mirror form. Responses
of `GET /system/functions` and `GET /system/function/<name>` get the original image back.
With a local registry address configured, `/v2/...` is streamed to the NIC cache too, so a
runtime that insists on plain HTTP only for 127.0.0.1 (faasd) can pull through it.

The hook fails open: if the cache is unreachable or the prefetch fails, the original image
is forwarded and the log says why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, request

from ..httpstream import HOP_BY_HOP, forward_headers, request_body, response_chunks
from .cache_client import CacheClient
from .rewrite import RewritePolicy, plan_deploy, restore_images, rewritten_body

log = logging.getLogger("faas_accel.hook")


@dataclass(frozen=True, kw_only=True)
class HookConfig:
    """How the hook is wired; each field's default in its comment."""

    provider_url: str  # the faas-provider the hook fronts, e.g. http://127.0.0.1:8081
    cache_url: str | None = None  # the NIC cache; None disables acceleration (pure proxy)
    cache_token: str | None = None  # admin token of the NIC cache
    mirror_host: str | None = None  # host[:port] in rewritten images (default: the cache's)
    prefetch_wait: float = 0.25  # seconds a deploy waits for its prefetch; the pull then joins the fill
    allow: frozenset[str] = field(default_factory=frozenset)  # registries to accelerate (all)
    deny: frozenset[str] = field(default_factory=frozenset)  # registries never accelerated
    vm: str | None = None  # this VM's name in deploy events
    timeout: float = 600.0  # seconds to wait for the provider (deploys pull images)

    @property
    def policy(self) -> RewritePolicy:
        host = self.mirror_host
        if host is None and self.cache_url:
            host = self.cache_url.split("://", 1)[-1].rstrip("/")
        return RewritePolicy(mirror_host=host or "", allow=self.allow, deny=self.deny)


def create_app(config: HookConfig, *, cache: CacheClient | None = None) -> Flask:
    """A hook app forwarding to `config.provider_url`."""
    app = Flask(__name__)
    session = requests.Session()
    session.trust_env = False
    client = cache or (CacheClient(config.cache_url, config.cache_token) if config.cache_url else None)
    policy = config.policy

    def forward(
        path: str, body: Any, extra: dict[str, str] | None = None, base: str | None = None
    ) -> requests.Response:
        headers = forward_headers(request.headers)
        headers.update(extra or {})
        url = f"{base or config.provider_url}/{path}"
        return session.request(
            request.method,
            url,
            params=request.args.to_dict(flat=False),
            data=body,
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=(5, config.timeout),
        )

    def relay(upstream: requests.Response, body: bytes | None = None) -> Response:
        headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
        if body is not None:
            upstream.close()
            return Response(body, status=upstream.status_code, headers=headers)
        resp = Response(
            response_chunks(upstream), status=upstream.status_code, headers=headers, direct_passthrough=True
        )
        length = upstream.headers.get("Content-Length")
        if length is not None and "Content-Encoding" not in upstream.headers:
            resp.headers["Content-Length"] = length
        return resp

    def deploy() -> Response:
        body = request.get_data()
        plan = plan_deploy(body, policy)
        if client is not None and plan.accelerate and plan.image is not None:
            image = str(plan.image)
            try:
                client.report_deploy(image, plan.function, config.vm)
                progress = client.prefetch(image, config.prefetch_wait, transcode=plan.transcode)
            except requests.RequestException as exc:
                log.warning(
                    "deploy %s: NIC cache unreachable (%s); forwarding %s unchanged",
                    plan.function,
                    exc,
                    plan.original,
                )
            else:
                if progress.get("state") in ("done", "running"):
                    body = rewritten_body(plan, policy)
                    log.info(
                        "deploy %s: %s -> mirror (%s, %s of %s bytes)",
                        plan.function,
                        plan.original,
                        progress.get("state"),
                        progress.get("bytes_done"),
                        progress.get("bytes_total"),
                    )
                else:
                    log.warning(
                        "deploy %s: prefetch of %s failed (%s); forwarding unchanged",
                        plan.function,
                        image,
                        progress.get("errors") or progress,
                    )
        elif client is not None:
            log.info("deploy %s: not accelerated: %s", plan.function, plan.reason)
        return relay(forward("system/functions", body))

    @app.route("/system/functions", methods=["GET", "POST", "PUT", "DELETE"])
    def functions() -> Response:
        if request.method in ("POST", "PUT"):
            return deploy()
        upstream = forward("system/functions", request_body())
        return _restored(upstream, relay)

    @app.route("/system/function/<path:name>", methods=["GET"])
    def function(name: str) -> Response:
        return _restored(forward(f"system/function/{name}", None), relay)

    @app.route("/v2/", defaults={"rest": ""}, methods=["GET", "HEAD"])
    @app.route("/v2/<path:rest>", methods=["GET", "HEAD"])
    def registry(rest: str) -> Response:
        if not config.cache_url:
            return Response(
                '{"errors":[{"code":"UNSUPPORTED","message":"no NIC cache"}]}',
                404,
                content_type="application/json",
            )
        return relay(forward(f"v2/{rest}", None, base=config.cache_url))

    @app.route("/", defaults={"path": ""}, methods=_ALL)
    @app.route("/<path:path>", methods=_ALL)
    def passthrough(path: str) -> Response:
        return relay(forward(path, request_body()))

    app.register_error_handler(requests.RequestException, _provider_down)
    app.extensions["faas_accel_hook"] = {"config": config, "cache": client}
    return app


_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _restored(upstream: requests.Response, relay: Any) -> Response:
    if upstream.status_code != 200 or "json" not in upstream.headers.get("Content-Type", "json"):
        return relay(upstream)  # type: ignore[no-any-return]
    body = upstream.content
    fixed = restore_images(body)
    return relay(upstream, fixed if fixed is not None else body)  # type: ignore[no-any-return]


def _provider_down(exc: requests.RequestException) -> Response:
    log.error("provider unreachable: %s", exc)
    return Response(f"faas-accel hook: provider unreachable: {exc}\n", 502, content_type="text/plain")


def from_env() -> Flask:
    """The gunicorn entry point: configuration from FAAS_ACCEL_HOOK_* variables."""
    logging.basicConfig(level=os.environ.get("FAAS_ACCEL_HOOK_LOG_LEVEL", "INFO"))
    env = os.environ

    def regs(name: str) -> frozenset[str]:
        return frozenset(r for r in env.get(name, "").split(",") if r)

    return create_app(
        HookConfig(
            provider_url=env["FAAS_ACCEL_HOOK_PROVIDER"].rstrip("/"),
            cache_url=(env.get("FAAS_ACCEL_HOOK_CACHE") or "").rstrip("/") or None,
            cache_token=env.get("FAAS_ACCEL_HOOK_TOKEN") or None,
            mirror_host=env.get("FAAS_ACCEL_HOOK_MIRROR_HOST") or None,
            prefetch_wait=float(env.get("FAAS_ACCEL_HOOK_PREFETCH_WAIT", "0.25")),
            allow=regs("FAAS_ACCEL_HOOK_ALLOW"),
            deny=regs("FAAS_ACCEL_HOOK_DENY"),
            vm=env.get("FAAS_ACCEL_HOOK_VM") or None,
        )
    )
