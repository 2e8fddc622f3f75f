"""The hook: a faas-provider API reverse proxy that sends every deploy through the NIC cache.

Every route is forwarded unchanged (status, headers, `Authorization`, query, streaming bodies
both ways). `POST|PUT /system/functions` is looked at first, and acted on only for a caller
the provider accepts: the hook asks the provider `GET /system/function/<name>` with the
caller's own credentials, and only if that answers as the deploy expects (404 for a create,
200 for an update) does it prefetch the image with a bounded wait and rewrite it to the
mirror form. The deploy is reported to the cache (popularity) only once the provider
accepted it (2xx), so faas-cli's PUT (404) then POST counts once and a failed deploy never.
Responses of `GET /system/functions` and `GET /system/function/<name>` get the original
image back. With a local registry address configured, `/v2/...` is streamed to the NIC
cache too, so a runtime that insists on plain HTTP only for 127.0.0.1 (faasd) can pull
through it.

The hook fails open: if the cache is unreachable or the prefetch fails, the original image
is forwarded and the log says why. One exception fails fast instead: an image whose
registry the cache has no upstream for is refused at once with a 400 naming the registry
(the VM reaches registries only through the NIC, so its own pull could only time out).
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests
from flask import Flask, Response, request

from ..cacheapi import CacheAPI, CacheAPIError, CacheUnreachable, Refused
from ..httpstream import HOP_BY_HOP, forward_headers, request_body, response_chunks
from .rewrite import SKIP_ANNOTATION, DeployPlan, RewritePolicy, plan_deploy, restore_images, rewritten_body

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
    timeout: float = 600.0  # seconds to wait for the provider (deploys pull images)

    @property
    def policy(self) -> RewritePolicy:
        host = self.mirror_host
        if host is None and self.cache_url:
            host = self.cache_url.split("://", 1)[-1].rstrip("/")
        return RewritePolicy(mirror_host=host or "", allow=self.allow, deny=self.deny)


def create_app(config: HookConfig, *, cache: CacheAPI | None = None) -> Flask:
    """A hook app forwarding to `config.provider_url`."""
    app = Flask(__name__)
    session = requests.Session()
    session.trust_env = False
    if cache is None and config.cache_url:
        cache = CacheAPI(config.cache_url, config.cache_token, timeout=5.0)
    client = cache
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

    def caller_may(plan: DeployPlan) -> str | None:
        """None if the provider, asked with the caller's credentials, answers as this deploy
        expects (POST: no such function yet; PUT: it exists); else why the hook stays out."""
        expected = 404 if request.method == "POST" else 200
        params = {"namespace": plan.namespace} if plan.namespace else request.args.to_dict(flat=False)
        name = urllib.parse.quote(plan.function or "", safe="")
        answer = session.get(
            f"{config.provider_url}/system/function/{name}",
            params=params,
            headers=forward_headers(request.headers),
            timeout=(5, 30),
        )
        answer.close()
        if answer.status_code == expected:
            return None
        return f"the provider answered {answer.status_code} to describing it; forwarding untouched"

    def deploy() -> Response:
        plan = plan_deploy(request.get_data(), policy)
        body = plan.body
        accelerate = client is not None and plan.accelerate
        if accelerate:
            refused = caller_may(plan)
            if refused is not None:
                log.info("deploy %s: not accelerated: %s", plan.function, refused)
                accelerate = False
        if accelerate:
            assert client is not None and plan.image is not None
            image = str(plan.image)
            try:
                auth = (plan.doc or {}).get("registryAuth")  # the VM's credential, passed through
                progress = client.prefetch(
                    image, wait=config.prefetch_wait,
                    registry_auth=auth if isinstance(auth, str) and auth else None, transcode=plan.transcode,
                )  # fmt: skip
            except CacheUnreachable as exc:
                log.warning(
                    "deploy %s: NIC cache unreachable (%s); forwarding %s unchanged",
                    plan.function,
                    exc,
                    plan.original,
                )
            except CacheAPIError as exc:
                unknown = _unknown_registry_of(exc)
                if unknown:
                    return _unknown_registry(plan, unknown)
                log.warning(
                    "deploy %s: prefetch of %s failed (%s); forwarding unchanged",
                    plan.function,
                    image,
                    [exc.message] if isinstance(exc, Refused) else [str(exc)],
                )
            else:
                if progress.state in ("done", "running"):
                    body = rewritten_body(plan, policy)
                    log.info(
                        "deploy %s: %s -> mirror (%s, %s of %s bytes)",
                        plan.function,
                        plan.original,
                        progress.state,
                        progress.bytes_done,
                        progress.bytes_total,
                    )
                else:
                    log.warning(
                        "deploy %s: prefetch of %s failed (%s); forwarding unchanged",
                        plan.function,
                        image,
                        list(progress.errors) or progress,
                    )
        elif client is not None and not plan.accelerate:
            log.info("deploy %s: not accelerated: %s", plan.function, plan.reason)
        upstream = forward("system/functions", body)
        if accelerate and 200 <= upstream.status_code < 300:
            report(plan)
        return relay(upstream)

    def report(plan: DeployPlan) -> None:
        assert client is not None
        try:
            client.report_deploy(str(plan.image), plan.function)
        except CacheAPIError as exc:
            log.warning("deploy %s: could not report it to the NIC cache: %s", plan.function, exc)

    @app.route("/system/functions", methods=["GET", "POST", "PUT", "DELETE"])
    def functions() -> Response:
        if request.method in ("POST", "PUT"):
            return deploy()
        upstream = forward("system/functions", request_body())
        return _restored(upstream, relay, policy.mirror_host)

    @app.route("/system/function/<path:name>", methods=["GET"])
    def function(name: str) -> Response:
        return _restored(forward(f"system/function/{name}", None), relay, policy.mirror_host)

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


def _restored(upstream: requests.Response, relay: Any, mirror_host: str) -> Response:
    if upstream.status_code != 200 or "json" not in upstream.headers.get("Content-Type", "json"):
        return relay(upstream)  # type: ignore[no-any-return]
    body = upstream.content
    fixed = restore_images(body, mirror_host)
    return relay(upstream, fixed if fixed is not None else body)  # type: ignore[no-any-return]


def _unknown_registry_of(exc: CacheAPIError) -> str | None:
    """The registry a refused prefetch names when the cache has no upstream for it."""
    detail = exc.detail if isinstance(exc, Refused) else None
    registry = detail.get("registry") if isinstance(detail, dict) else None
    return registry if exc.code == "NAME_UNKNOWN" and isinstance(registry, str) else None


def _unknown_registry(plan: DeployPlan, registry: str) -> Response:
    log.warning("deploy %s: registry %s of %s is not configured on the NIC cache", plan.function,
                registry, plan.original)  # fmt: skip
    message = (
        f"faas-accel hook: cannot deploy {plan.function}: registry {registry} (of image "
        f"{plan.original}) is not configured on the NIC cache, and this VM reaches registries only "
        f"through it. Add {registry} to the cache's upstreams, or deploy with the annotation "
        f'{SKIP_ANNOTATION}: "true" to have the runtime pull it directly.'
    )
    return Response(message + "\n", 400, content_type="text/plain; charset=utf-8")


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
        )
    )
