"""A real CNCF distribution registry on loopback, with request counting from its log and
pushes through its HTTP API.

distribution 2.8 logs each request twice: a logrus line (``msg="response
completed"`` for 2xx/3xx, ``msg="response completed with error"`` otherwise)
and a combined-format access-log line. We switch logrus to JSON and count
only those lines, so each request is counted exactly once. Both lines are
written before the last bytes of the response are flushed, so a client that
has finished reading will find its request already counted.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from .procs import Proc, free_port, http_answers, session, stop

BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]+)$")
MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")


@dataclass(frozen=True)
class Request:
    """One request as the registry logged it."""

    method: str
    path: str  # without the query string
    status: int
    written: int  # body bytes the registry wrote (to the socket, not necessarily read)
    user_agent: str

    @property
    def blob(self) -> tuple[str, str] | None:
        """``(repo, digest)`` if this was a blob request."""
        match = BLOB_PATH.match(self.path)
        return (match["repo"], match["digest"]) if match else None

    @property
    def manifest(self) -> tuple[str, str] | None:
        """``(repo, reference)`` if this was a manifest request."""
        match = MANIFEST_PATH.match(self.path)
        return (match["repo"], match["ref"]) if match else None


class Registry:
    """``docker-registry serve`` on 127.0.0.1 with filesystem storage in a temp dir.

    ``proxy`` makes it a pull-through cache of that remote URL. ``stop()`` and
    ``start()`` may be called any number of times: the port, storage and log
    stay, so counts span restarts. ``close()`` stops it and removes its files.
    """

    def __init__(
        self, *, proxy: str | None = None, workdir: Path | None = None, auth: dict[str, Any] | None = None
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="registry-"))
        self.storage = self.workdir / "storage"
        self.log = self.workdir / "registry.log"
        self.config_path = self.workdir / "config.yml"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.proxy = proxy
        self.auth = auth  # distribution's `auth:` section (see htpasswd_auth, TokenServer)
        self.proc: Proc | None = None
        self._http: requests.Session | None = None
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config()))

    def config(self) -> dict[str, Any]:
        """The distribution configuration this instance runs with."""
        cfg: dict[str, Any] = {
            "version": 0.1,
            "log": {
                "level": "info",
                "formatter": "json",
                "accesslog": {"disabled": False},
                "fields": {"service": "registry"},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "tests-support-not-secret"},
        }
        if self.proxy:
            cfg["proxy"] = {"remoteurl": self.proxy}
        if self.auth:
            cfg["auth"] = self.auth
        return cfg

    def start(self, timeout: float = 15.0) -> Registry:
        """Start (or restart) the registry and wait until ``/v2/`` answers."""
        if self.proc is not None and self.proc.running():
            return self
        self.proc = Proc(["docker-registry", "serve", self.config_path], self.log)
        self.proc.wait_until(lambda: http_answers(self.url + "/v2/"), timeout, "/v2/ answering")
        return self

    def stop(self) -> None:
        """Stop the process; storage and log are kept for a later ``start()``."""
        if self._http is not None:
            self._http.close()
            self._http = None
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def close(self) -> None:
        """Stop and delete the working directory if this instance created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pushes through the registry API ---------------------------------------------------------

    @property
    def http(self) -> requests.Session:
        """One keep-alive session to this registry (no proxy), closed by ``stop()``."""
        if self._http is None:
            self._http = session()
        return self._http

    def has_blob(self, repo: str, digest: str) -> bool:
        """True if ``repo`` holds the blob ``digest``."""
        return self.http.head(f"{self.url}/v2/{repo}/blobs/{digest}", timeout=30).status_code == 200

    def push_blob(self, repo: str, digest: str, data: bytes | Path, *, mount_from: str | None = None) -> None:
        """Upload one blob in a single PUT (a ``Path`` is streamed from its file) or, with
        ``mount_from``, mount it from that repository, uploading it if the registry will not."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        start = self.http.post(f"{self.url}/v2/{repo}/blobs/uploads/", params=params, timeout=30)
        if start.status_code == 201:  # mounted
            return
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        with open(data, "rb") if isinstance(data, Path) else contextlib.nullcontext(data) as body:
            put = self.http.put(location, params={"digest": digest}, data=body, timeout=300,
                                headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        put.raise_for_status()

    def push_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> None:
        """PUT a manifest under ``reference`` (a tag or its digest)."""
        resp = self.http.put(f"{self.url}/v2/{repo}/manifests/{reference}", data=body, timeout=30,
                             headers={"Content-Type": media_type})  # fmt: skip
        resp.raise_for_status()

    # -- the request log ------------------------------------------------------------------------

    def requests(self) -> list[Request]:
        """Every request logged so far, in order, each exactly once."""
        found: list[Request] = []
        if not self.log.exists():
            return found
        with open(self.log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("{"):
                    continue  # access-log and non-JSON lines
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line still being written
                if not str(entry.get("msg", "")).startswith("response completed"):
                    continue
                found.append(
                    Request(
                        method=entry.get("http.request.method", ""),
                        path=str(entry.get("http.request.uri", "")).split("?", 1)[0],
                        status=int(entry.get("http.response.status", 0)),
                        written=int(entry.get("http.response.written", 0)),
                        user_agent=entry.get("http.request.useragent", ""),
                    )
                )
        return found

    def blob_gets(self, digest: str | None = None) -> Counter[str]:
        """Count successful (2xx) ``GET /v2/<repo>/blobs/<digest>`` per digest.

        With ``digest``, only that digest is counted (its count is 0 if absent).
        """
        counts: Counter[str] = Counter()
        if digest is not None:
            counts[digest] = 0
        for req in self.requests():
            blob = req.blob
            if req.method != "GET" or blob is None or not 200 <= req.status < 300:
                continue
            if digest is None or blob[1] == digest:
                counts[blob[1]] += 1
        return counts

    def blob_bytes(self) -> int:
        """Body bytes written by all successful blob GETs so far."""
        return sum(
            r.written for r in self.requests() if r.method == "GET" and r.blob and 200 <= r.status < 300
        )

    def __repr__(self) -> str:
        mode = f" proxy of {self.proxy}" if self.proxy else ""
        return f"<Registry {self.url}{mode}>"


def htpasswd_auth(workdir: Path, users: dict[str, str]) -> dict[str, Any]:
    """An `auth: htpasswd` section for `users` (name -> password), bcrypt as distribution wants."""
    import bcrypt

    path = workdir / "htpasswd"
    lines = [f"{name}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
             for name, pw in users.items()]  # fmt: skip
    path.write_text("".join(lines))
    return {"htpasswd": {"realm": "test-registry", "path": str(path)}}
