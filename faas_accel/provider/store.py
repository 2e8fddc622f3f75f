"""Function records: in memory, persisted as one JSON file the provider alone writes.

A record is what was deployed plus what the provider decided: the port the function
listens on, when its container was created and how many replicas are wanted (0 or 1).
The file is replaced atomically on every change, so a restarted provider finds the
functions it had and re-adopts their containers. Ports come from a range, round-robin,
so a port freed by a delete or update is the last to be handed out again.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import ProviderError
from .model import FunctionDeployment, format_time, parse_time

VERSION = 1


@dataclass(frozen=True, kw_only=True)
class FunctionRecord:
    """One deployed function."""

    deployment: FunctionDeployment
    port: int
    created_at: datetime
    replicas: int = 1  # wanted: 0 (scaled to zero) or 1

    @property
    def name(self) -> str:
        return self.deployment.service

    def scaled(self, replicas: int) -> FunctionRecord:
        return replace(self, replicas=replicas)

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.to_json(),
            "port": self.port,
            "createdAt": format_time(self.created_at),
            "replicas": self.replicas,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FunctionRecord:
        return cls(
            deployment=FunctionDeployment.from_json(doc["deployment"]),
            port=int(doc["port"]),
            created_at=parse_time(doc["createdAt"], "createdAt"),
            replicas=int(doc.get("replicas", 1)),
        )


def port_free(port: int) -> bool:
    """True if nothing listens on `port` (any address) in this network namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class PortsExhausted(ProviderError):
    """Every port of the range is taken."""


class FunctionStore:
    """Records by name, thread-safe, saved to `path` on every change."""

    def __init__(
        self,
        path: Path,
        port_range: tuple[int, int],
        *,
        is_free: Callable[[int], bool] = port_free,
    ) -> None:
        self.path = path
        self.low, self.high = port_range
        self.is_free = is_free
        self._lock = threading.Lock()
        self._records: dict[str, FunctionRecord] = {}
        self._reserved: set[int] = set()
        self._next = self.low
        self._invocations: dict[str, int] = {}
        self._load()

    def get(self, name: str) -> FunctionRecord | None:
        with self._lock:
            return self._records.get(name)

    def all(self) -> list[FunctionRecord]:
        with self._lock:
            return [self._records[name] for name in sorted(self._records)]

    def put(self, record: FunctionRecord) -> None:
        """Add or replace a record (its port stops being merely reserved) and save."""
        with self._lock:
            old = self._records.get(record.name)
            if old is None or old.created_at != record.created_at:
                self._invocations.pop(record.name, None)
            self._records[record.name] = record
            self._reserved.discard(record.port)
            self._save()

    def delete(self, name: str) -> FunctionRecord | None:
        with self._lock:
            record = self._records.pop(name, None)
            self._invocations.pop(name, None)
            if record is not None:
                self._save()
            return record

    def reserve_port(self) -> int:
        """A port no record uses, not reserved and free right now; release it if unused."""
        with self._lock:
            taken = self._reserved | {r.port for r in self._records.values()}
            size = self.high - self.low + 1
            for i in range(size):
                port = self.low + (self._next - self.low + i) % size
                if port not in taken and self.is_free(port):
                    self._reserved.add(port)
                    self._next = port + 1 if port < self.high else self.low
                    return port
        raise PortsExhausted(f"no free port left in {self.low}-{self.high}")

    def release_port(self, port: int) -> None:
        with self._lock:
            self._reserved.discard(port)

    def count_invocation(self, name: str) -> None:
        with self._lock:
            self._invocations[name] = self._invocations.get(name, 0) + 1

    def invocations(self, name: str) -> int:
        with self._lock:
            return self._invocations.get(name, 0)

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        for raw in doc.get("functions", []):
            record = FunctionRecord.from_json(raw)
            self._records[record.name] = record
        self._next = int(doc.get("nextPort", self.low))
        if not self.low <= self._next <= self.high:
            self._next = self.low

    def _save(self) -> None:
        doc = {
            "version": VERSION,
            "nextPort": self._next,
            "functions": [self._records[name].to_json() for name in sorted(self._records)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
