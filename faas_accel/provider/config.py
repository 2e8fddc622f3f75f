"""The provider's configuration: one frozen dataclass, passed to gunicorn workers as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

RUNTIMES = ("containerd", "docker")


def parse_port_range(text: str) -> tuple[int, int]:
    """`"18000-18999"` -> (18000, 18999); ValueError if malformed or empty."""
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text if sep else low_text)
    except ValueError as exc:
        raise ValueError(f"port range must look like 18000-18999, got {text!r}") from exc
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port range {text!r} is empty or outside 1-65535")
    return low, high


@dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    """How one provider runs; each field's default in its comment."""

    runtime: str  # "containerd" or "docker"
    address: str  # containerd's socket path, or dockerd's base URL (unix:///...)
    state_dir: Path  # function records, logs, pid files; secrets in <state_dir>/secrets/<namespace>
    namespace: str = "openfaas-fn"  # containerd namespace (containerd only)
    hosts_dir: Path | None = None  # containerd hosts.toml tree for pulls (ctr --hosts-dir); None: none
    auth_user: str = "admin"
    auth_password_file: Path | None = None  # None disables basic auth on /system/*
    port_range: tuple[int, int] = (18000, 18999)  # ports handed to functions
    ready_timeout: float = 60.0  # seconds a deploy or scale-up waits for the health check
    pull_timeout: float = 600.0  # seconds an image pull may take
    stop_grace: float = 2.0  # seconds between SIGTERM and SIGKILL when stopping a function
    invoke_timeout: float = 300.0  # seconds an invocation may wait for the function's answer
    async_workers: int = 1  # threads running /async-function/ calls (the queue-worker's max_inflight)
    async_queue: int = 1000  # async calls that may wait; more are refused with 429
    ctr: str = "ctr"  # the ctr binary (containerd only)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")

    def to_json(self) -> str:
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            doc[f.name] = str(value) if isinstance(value, Path) else value
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> ProviderConfig:
        doc = json.loads(text)
        for key in ("state_dir", "hosts_dir", "auth_password_file"):
            if doc.get(key) is not None:
                doc[key] = Path(doc[key])
        if "port_range" in doc:
            doc["port_range"] = tuple(doc["port_range"])
        return cls(**doc)
