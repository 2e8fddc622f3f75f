"""Minimal launchers for the policy replay: a CNCF registry upstream, the NIC cache under
gunicorn, and the prewarm scheduler — real processes on 127.0.0.1, each in its own session,
logging to a file, stopped by the PID this module started (never by name).

load/ does not import tests/; this was written before faas_accel/testbed (issue 14's home
for the tests' fuller helpers) reached main, and is the least the replay needs: push blobs and
manifests through the registry HTTP API, start/stop, and read a cache's CPU time and peak
memory from /proc (the gunicorn master and its workers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

TOKEN = "replay-admin-token"
FAAS_ACCEL = [sys.executable, "-m", "faas_accel"]
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def session() -> requests.Session:
    """A requests session that never goes through a proxy (loopback only)."""
    s = requests.Session()
    s.trust_env = False
    return s


class Process:
    """One started process (own session, output to `log`); `stop()` ends that PID only."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        clean = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                          env={**clean, **(env or {})}, start_new_session=True)  # fmt: skip
        self.pid = self.popen.pid

    def wait_answering(self, url: str, timeout: float) -> None:
        """Until `url` answers HTTP (any status); raises naming the log on timeout or exit."""
        deadline = time.monotonic() + timeout
        with session() as s:
            while True:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{url}: process exited {self.popen.returncode}; see {self.log}")
                try:
                    s.get(url, timeout=2).close()
                    return
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} silent for {timeout:g}s; see {self.log}") from None
                    time.sleep(0.1)

    def children(self) -> list[int]:
        """PIDs of this process's children (gunicorn's workers)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM this PID, then SIGKILL it (and children it left) if it does not exit."""
        if self.popen.poll() is not None:
            return
        kids = self.children()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)
        for pid in kids:  # workers of a killed master would linger as orphans
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def proc_usage(pids: list[int]) -> tuple[float, int]:
    """(CPU seconds user+system, sum of peak RSS bytes) of live `pids`; the first one's
    reaped children count in its CPU time (a worker gunicorn replaced)."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, peak = 0.0, 0
    for i, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if i == 0 else 0)
        cpu += used / tick
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak += int(line.split()[1]) * 1024
    return cpu, peak


class Upstream:
    """`docker-registry serve` on 127.0.0.1 with its storage in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": "replay-not-secret"},
        }  # fmt: skip
        (workdir / "registry.yml").write_text(yaml.safe_dump(config))
        argv = ["docker-registry", "serve", str(workdir / "registry.yml")]
        self.proc = Process(argv, workdir / "registry.log")
        self.proc.wait_answering(f"{self.url}/v2/", 20)
        self.http = session()

    def push_blob(self, repo: str, digest: str, data: bytes, *, mount_from: str | None = None) -> None:
        """Upload one blob (monolithic), or mount it from another repository."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        resp = self.http.post(f"{self.url}/v2/{repo}/blobs/uploads/", params=params, timeout=30)
        if resp.status_code == 201:
            return
        resp.raise_for_status()
        location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        put = self.http.put(location, params={"digest": digest}, data=data, timeout=60,
                            headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        put.raise_for_status()

    def push_manifest(self, repo: str, tag: str, body: bytes, media_type: str) -> None:
        """PUT a manifest under `tag`."""
        resp = self.http.put(f"{self.url}/v2/{repo}/manifests/{tag}", data=body, timeout=30,
                             headers={"Content-Type": media_type})  # fmt: skip
        resp.raise_for_status()

    def close(self) -> None:
        """Stop the registry."""
        self.http.close()
        self.proc.stop()


class CacheServer:
    """`faas-accel cache serve` with a config of `settings` on top of the replay's defaults."""

    def __init__(self, workdir: Path, upstreams: dict[str, str], settings: dict[str, Any]) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "listen": f"127.0.0.1:{self.port}", "data_dir": str(workdir / "data"), "admin_token": TOKEN,
            "upstreams": {k: {"url": v} for k, v in upstreams.items()}, "tag_ttl": "30d",
            "retries": 1, "connect_timeout": "5s", "read_timeout": "30s", "verify_on_start": "off",
            "transcode": {"encoding": "off"}, **settings,
        }  # fmt: skip
        (workdir / "nic-cache.yml").write_text(yaml.safe_dump(config))
        env = {"NIC_CACHE_LOG_LEVEL": "WARNING"}
        self.proc = Process([*FAAS_ACCEL, "cache", "serve", "--config", str(workdir / "nic-cache.yml")],
                            workdir / "cache.log", env)  # fmt: skip
        self.proc.wait_answering(f"{self.url}/v2/", 60)
        self.admin = session()
        self.admin.headers["Authorization"] = f"Bearer {TOKEN}"

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, peak RSS bytes summed) of the master and its workers so far."""
        return proc_usage([self.proc.pid, *self.proc.children()])

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path> as JSON."""
        resp = self.admin.get(f"{self.url}/api/v1/{path}", params=params, timeout=60)
        resp.raise_for_status()
        return resp.json()

    def close(self) -> None:
        """Stop the cache (its data stay in `workdir` for the caller to remove)."""
        self.admin.close()
        self.proc.stop()


class Scheduler:
    """`faas-accel prewarm run` on a prewarm.yml of `schedules` against `cache`."""

    def __init__(self, workdir: Path, cache: CacheServer, schedules: list[dict[str, Any]],
                 limits: dict[str, Any]) -> None:  # fmt: skip
        doc = {"cache": {"url": cache.url, "token": TOKEN}, "limits": limits, "schedules": schedules}
        (workdir / "prewarm.yml").write_text(yaml.safe_dump(doc))
        self.proc = Process([*FAAS_ACCEL, "prewarm", "run", "--config", str(workdir / "prewarm.yml")],
                            workdir / "prewarm.log")  # fmt: skip

    def usage(self) -> tuple[float, int]:
        """(CPU seconds, peak RSS bytes) of the scheduler."""
        return proc_usage([self.proc.pid])

    def close(self) -> None:
        """Stop the scheduler."""
        self.proc.stop()


def workdir(prefix: str, parent: str | None = None) -> Path:
    """A fresh temp directory."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
