"""The hook's client for the NIC cache admin API."""

from __future__ import annotations

from typing import Any

import requests


class CacheClient:
    """Reports deploys and asks for prefetches; raises requests exceptions when unreachable."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def report_deploy(self, image: str, function: str | None) -> None:
        """Record an accepted deploy for popularity (best effort: errors other than transport
        are ignored). The cache knows this VM by the address the report comes from, as it
        knows the VM's pulls."""
        self.session.post(
            f"{self.url}/api/v1/events/deploy",
            json={"image": image, "function": function},
            timeout=self.timeout,
        ).close()

    def prefetch(
        self, image: str, wait: float, registry_auth: str | None = None, *, transcode: bool = True
    ) -> dict[str, Any]:
        """Fill `image`, waiting at most `wait` seconds; the cache's progress document.
        `registry_auth` (the deploy's OpenFaaS registryAuth) makes the cache check that the
        VM's own credential can read the image before it fills anything. `transcode` False
        keeps the image's layers as pushed (a function's annotation).

        A refusal becomes `{"state": "failed", "errors": [...]}`; when the cache has no
        upstream for the image's registry, `"unknown_registry"` names it."""
        doc: dict[str, Any] = {"image": image, "wait": wait}
        if registry_auth:
            doc["registry_auth"] = registry_auth
        if not transcode:
            doc["transcode"] = False
        resp = self.session.post(
            f"{self.url}/api/v1/prefetch",
            json=doc,
            timeout=(self.timeout, wait + self.timeout),
        )
        with resp:
            try:
                body: dict[str, Any] = resp.json()
            except ValueError:
                return {"state": "failed", "errors": [f"HTTP {resp.status_code}: {resp.text[:200]}"]}
        if "state" in body:
            return body
        errors = body.get("errors") or [{"message": f"HTTP {resp.status_code}"}]
        out: dict[str, Any] = {"state": "failed", "errors": [e.get("message", str(e)) for e in errors]}
        first = errors[0] if isinstance(errors[0], dict) else {}
        detail = first.get("detail")
        registry = detail.get("registry") if isinstance(detail, dict) else None
        if first.get("code") == "NAME_UNKNOWN" and isinstance(registry, str):
            out["unknown_registry"] = registry
        return out
