"""The prewarm scheduler's client for the cache's admin API (the only prewarm module that
imports `requests`; every transport error becomes CacheUnreachable here)."""

from __future__ import annotations

from typing import Any

import requests

from .errors import CacheUnreachable, PrewarmError
from .spec import Limits


class CacheAPI:
    """Admin calls a scheduler makes; raises PrewarmError (status, code) on an error answer."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # loopback/lab addresses must not go through a proxy
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, *, read_timeout: float | None = None, **kw: Any) -> Any:
        url = f"{self.url}/api/v1/{path}"
        try:
            timeout = (self.timeout, read_timeout or self.timeout)
            resp = self.session.request(method, url, timeout=timeout, **kw)
        except requests.RequestException as exc:
            raise CacheUnreachable(f"cannot reach the cache at {self.url}: {exc}") from exc
        with resp:
            try:
                body = resp.json()
            except ValueError:
                body = {}
        if resp.status_code >= 400 and not (isinstance(body, dict) and "state" in body):
            err = (body.get("errors") or [{}])[0] if isinstance(body, dict) else {}
            code, message = str(err.get("code", "")), str(err.get("message") or resp.text[:200])
            raise PrewarmError(f"{method} {url}: {resp.status_code} {code}: {message}",
                               status=resp.status_code, code=code)  # fmt: skip
        return body

    def heartbeat(self, holder: str, ttl: float, registration: dict[str, Any] | None) -> dict[str, Any]:
        """Take or renew the lease; `{"leader", "holder", "requests"}`."""
        body = {"holder": holder, "ttl": ttl, "registration": registration}
        answer: dict[str, Any] = self._call("POST", "prewarm/heartbeat", json=body)
        return answer

    def release(self, holder: str) -> None:
        """Give the lease up."""
        self._call("DELETE", "prewarm/lease", params={"holder": holder})

    def popular(self, *, top: int, window: float, min_pulls: int, half_life: float) -> list[dict[str, Any]]:
        """The cache's ranking, most popular first."""
        params = {"limit": top, "window": f"{window:g}s", "min_pulls": min_pulls,
                  "half_life": f"{half_life:g}s"}  # fmt: skip
        images: list[dict[str, Any]] = self._call("GET", "popular", params=params)["images"]
        return images

    def prefetch(
        self,
        image: str,
        *,
        platforms: tuple[str, ...] | None = None,
        pin: bool = False,
        schedule: str | None = None,
        limits: Limits | None = None,
        wait: float = 3600.0,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """A background prefetch (its progress once done or after `wait`), or its dry-run plan."""
        body: dict[str, Any] = {"image": image, "priority": "background", "pin": pin, "wait": wait,
                                "dry_run": dry_run}  # fmt: skip
        if limits is not None:
            body["limits"] = {"concurrency": limits.concurrency, "bandwidth": limits.bandwidth}
        if platforms:
            body["platforms"] = list(platforms)
        if schedule:
            body["schedule"] = schedule
        answer: dict[str, Any] = self._call("POST", "prefetch", json=body, read_timeout=wait + self.timeout)
        return answer

    def start_run(
        self,
        name: str,
        *,
        holder: str,
        trigger: str,
        scheduled: float | None = None,
        request: int | None = None,
    ) -> int:
        """Record the start of a run; PrewarmError with code NOT_LEADER without the lease."""
        body = {"name": name, "holder": holder, "trigger": trigger, "scheduled": scheduled,
                "request": request}  # fmt: skip
        return int(self._call("POST", "prewarm/runs", json=body)["id"])

    def finish_run(self, run_id: int, result: dict[str, Any]) -> None:
        """Record a run's result."""
        self._call("PUT", f"prewarm/runs/{run_id}", json=result)

    def status(self) -> dict[str, Any]:
        """`GET /api/v1/prewarm`."""
        answer: dict[str, Any] = self._call("GET", "prewarm")
        return answer
