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

    def report_deploy(self, image: str, function: str | None, vm: str | None) -> None:
        """Record a deploy for popularity (best effort: errors other than transport are ignored)."""
        self.session.post(
            f"{self.url}/api/v1/events/deploy",
            json={"image": image, "function": function, "vm": vm},
            timeout=self.timeout,
        ).close()

    def prefetch(self, image: str, wait: float, *, transcode: bool = True) -> dict[str, Any]:
        """Fill `image`, waiting at most `wait` seconds; the cache's progress document.
        `transcode` False keeps the image's layers as pushed (a function's annotation)."""
        doc: dict[str, Any] = {"image": image, "wait": wait}
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
        if "state" not in body:
            errors = body.get("errors") or [{"message": f"HTTP {resp.status_code}"}]
            return {"state": "failed", "errors": [e.get("message", str(e)) for e in errors]}
        return body
