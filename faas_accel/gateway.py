"""A faas-cli-like client of the faas-provider API: deploy, invoke, delete, with timings.

Deploys exactly as `faas-cli deploy` does: `PUT /system/functions`, then `POST` on 404, with
basic auth and `labels`/`annotations` as `{}`. Used by the lab demo, the benchmarks and tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from .provider.phases import HEADER as PHASES_HEADER
from .provider.phases import parse_server_timing


class GatewayError(RuntimeError):
    """The gateway refused a call; the message has its status and body."""


@dataclass(frozen=True)
class Timing:
    """One cold start: deploy latency (sent -> 2xx) and first-invoke latency (sent -> first 200)."""

    function: str
    image: str
    deploy_s: float
    first_invoke_s: float
    body: bytes
    # the provider's deploy phases in seconds (its Server-Timing header; empty if it sent none)
    phases: dict[str, float] = field(default_factory=dict)


def deployment(name: str, image: str, **extra: Any) -> dict[str, Any]:
    """The FunctionDeployment faas-cli sends."""
    doc: dict[str, Any] = {
        "service": name,
        "image": image,
        "network": "",
        "envProcess": "",
        "envVars": {},
        "constraints": [],
        "secrets": [],
        "labels": {},
        "annotations": {},
        "namespace": "",
        "readOnlyRootFilesystem": False,
    }
    doc.update(extra)
    return doc


class Gateway:
    """One OpenFaaS gateway or provider URL with its basic-auth credentials."""

    def __init__(
        self, url: str, user: str | None = None, password: str | None = None, *, timeout: float = 600
    ) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        if user is not None and password is not None:
            self.session.auth = (user, password)
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def deploy(self, name: str, image: str, **extra: Any) -> requests.Response:
        """PUT, then POST on 404 (faas-cli's order); raises GatewayError on failure."""
        doc = deployment(name, image, **extra)
        resp = self.session.put(f"{self.url}/system/functions", json=doc, timeout=self.timeout)
        if resp.status_code == 404:
            resp = self.session.post(f"{self.url}/system/functions", json=doc, timeout=self.timeout)
        if not 200 <= resp.status_code < 300:
            raise GatewayError(f"deploy {name} ({image}): {resp.status_code} {resp.text.strip()[:500]}")
        return resp

    def delete(self, name: str) -> None:
        resp = self.session.delete(f"{self.url}/system/functions", json={"functionName": name}, timeout=60)
        if resp.status_code not in (200, 202, 404):
            raise GatewayError(f"delete {name}: {resp.status_code} {resp.text.strip()[:300]}")

    def functions(self) -> list[dict[str, Any]]:
        resp = self.session.get(f"{self.url}/system/functions", timeout=30)
        if resp.status_code != 200:
            raise GatewayError(f"list: {resp.status_code} {resp.text.strip()[:300]}")
        data: list[dict[str, Any]] = resp.json()
        return data

    def describe(self, name: str) -> dict[str, Any]:
        resp = self.session.get(f"{self.url}/system/function/{name}", timeout=30)
        if resp.status_code != 200:
            raise GatewayError(f"describe {name}: {resp.status_code} {resp.text.strip()[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    def invoke(self, name: str, body: bytes = b"", *, timeout: float = 30) -> requests.Response:
        return self.session.post(f"{self.url}/function/{name}", data=body, timeout=timeout)

    def wait_invocable(self, name: str, body: bytes = b"", *, deadline_s: float = 120) -> requests.Response:
        """Invoke until the first 200 (polling every 10 ms); raises GatewayError at the deadline."""
        end = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < end:
            try:
                resp = self.invoke(name, body, timeout=10)
                if resp.status_code == 200:
                    return resp
                last = f"{resp.status_code} {resp.text[:200]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.01)
        raise GatewayError(f"{name} never answered 200 within {deadline_s:.0f} s: {last}")

    def cold_start(self, name: str, image: str, body: bytes = b"", **extra: Any) -> Timing:
        """Deploy and invoke until the first 200, timing both from the moment the deploy is sent."""
        t0 = time.monotonic()
        deployed = self.deploy(name, image, **extra)
        t1 = time.monotonic()
        resp = self.wait_invocable(name, body)
        t2 = time.monotonic()
        phases = parse_server_timing(deployed.headers.get(PHASES_HEADER))
        return Timing(name, image, t1 - t0, t2 - t0, resp.content, phases)
