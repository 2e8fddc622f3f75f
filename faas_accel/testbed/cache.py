"""The NIC cache as users run it: `faas-accel cache serve` (gunicorn, several workers)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..cacheapi import CacheAPI
from .procs import Proc, free_port, http_answers, pid_alive, stop, wait_for

FAAS_ACCEL = [sys.executable, "-m", "faas_accel"]
TOKEN = "test-admin-token"


class Cache:
    """A running cache with a config pointing at the given upstreams.

    `upstreams` maps registry host -> URL; `extra` is config on top of the defaults below and
    `env` the server's extra environment. `stop()`/`start()` keep data and port, so a test can
    restart it; `close()` stops it and removes its files (`workdir` only if it made it).
    """

    def __init__(
        self,
        upstreams: dict[str, str],
        *,
        default_upstream: str | None = None,
        workers: int = 3,
        threads: int = 16,
        host: str = "127.0.0.1",
        extra: dict[str, Any] | None = None,
        data_dir: Path | None = None,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._owns_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="nic-cache-test-"))
        self.env = dict(env or {})
        self.port = free_port(host)
        self.host = f"{host}:{self.port}"
        self.url = f"http://{self.host}"
        self.data_dir = data_dir or self.dir / "data"
        config: dict[str, Any] = {
            "listen": self.host,
            "data_dir": str(self.data_dir),
            "capacity": "2GiB",
            "admin_token": TOKEN,
            "default_upstream": default_upstream,
            "upstreams": {k: {"url": v} for k, v in upstreams.items()},
            "workers": workers,
            "threads": threads,
            "tag_ttl": "5m",
            "retries": 1,
            "connect_timeout": "2s",
            "read_timeout": "10s",
            # off unless a test asks: background re-encodings would add blobs to exact counts
            "transcode": {"encoding": "off"},
            **(extra or {}),
        }
        self.config_path = self.dir / "nic-cache.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = self.dir / "cache.log"
        self.proc: Proc | None = None

    def start(self, timeout: float = 30.0) -> Cache:
        self.proc = Proc(
            [*FAAS_ACCEL, "cache", "serve", "--config", str(self.config_path)], self.log, env=self.env,
        )
        self.proc.wait_until(lambda: http_answers(f"{self.url}/v2/"), timeout, f"cache at {self.url}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            workers = self.worker_pids()
            if stop(self.proc) == -signal.SIGKILL:  # a killed master leaves its workers orphaned
                for pid in filter(pid_alive, workers):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.proc = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- admin helpers ----------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def stats(self) -> dict[str, Any]:
        with CacheAPI(self.url, TOKEN) as api:
            return api.stats()

    def metric(self, name: str) -> float:
        """A summed metric value from /api/v1/stats (0 when absent)."""
        metrics = self.stats()["metrics"]
        return float(sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{")))

    def stored_blobs(self) -> set[str]:
        """Digests of every file in the blob store (the truth on disk)."""
        root = self.data_dir / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in root.glob("*/*")} if root.exists() else set()

    def tmp_files(self, *, locks: bool = False) -> list[str]:
        """What is in tmp/ (lock files only with `locks`)."""
        tmp = self.data_dir / "tmp"
        if not tmp.exists():
            return []
        return sorted(p.name for p in tmp.iterdir() if locks or not p.name.endswith(".lock"))

    def worker_pids(self) -> list[int]:
        """The gunicorn workers of the running master."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in children.read_text().split()] if children.exists() else []

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no fill is in flight."""
        wait_for(lambda: self.metric("nic_cache_fills_in_flight") == 0 and not self.tmp_files(),
                 timeout, "the cache's fills to finish")
