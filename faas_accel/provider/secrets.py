"""Secrets as faasd keeps them: one file per secret, `<root>/<namespace>/<name>`.

`/system/secrets` creates, updates, lists and deletes them with faas-provider's
`types.Secret` JSON (`name`, `namespace`, `value` or base64 `rawValue`); a deploy naming a
secret gets its file bind-mounted read-only at `/var/openfaas/secrets/<name>`. Values are
never returned by the API. A create writes a new file atomically; an update rewrites the
file in place, so running functions (whose mount is bound to that file) read the new value,
as under faasd. The directory is 0700 (only root reads it on the host); files are 0644 so a
function running as any user can read its own mounted secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidRequest, SecretExists, SecretNotFound
from .model import NAMESPACE, check_namespace, check_secret_name

MAX_VALUE = 1 << 20  # what Kubernetes allows for a secret


@dataclass(frozen=True)
class Secret:
    """A parsed `types.Secret` body."""

    name: str
    namespace: str
    value: bytes | None  # None when the body carries none (a delete)


def parse_secret(body: bytes, query_namespace: str | None = None) -> Secret:
    """`{"name", "namespace"?, "value"? | "rawValue"? (base64)}` -> Secret (InvalidRequest if bad).

    The body's namespace wins over the query's; both empty means openfaas-fn."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"unable to parse secret: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidRequest("secret must be a JSON object")
    namespace = doc.get("namespace") or query_namespace
    if namespace is not None and not isinstance(namespace, str):
        raise InvalidRequest("namespace must be a string")
    value: bytes | None = None
    raw, text = doc.get("rawValue"), doc.get("value")
    if raw:
        if not isinstance(raw, str):
            raise InvalidRequest("rawValue must be base64 text")
        try:
            value = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"rawValue is not valid base64: {exc}") from exc
    elif text is not None:
        if not isinstance(text, str):
            raise InvalidRequest("value must be a string")
        value = text.encode()
    if value is not None and len(value) > MAX_VALUE:
        raise InvalidRequest(f"secret value is larger than {MAX_VALUE} bytes")
    return Secret(check_secret_name(doc.get("name")), check_namespace(namespace), value)


class SecretStore:
    """Secret files under `root`, one directory per namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._adopt_flat_files()

    def path(self, namespace: str, name: str) -> Path:
        """Where a secret's file is (whether or not it exists)."""
        return self.root / check_namespace(namespace) / check_secret_name(name)

    def names(self, namespace: str) -> list[str]:
        """The secrets of a namespace, sorted."""
        folder = self.root / check_namespace(namespace)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".tmp-"))

    def create(self, secret: Secret) -> None:
        """A new secret; SecretExists if the namespace has one of that name."""
        path = self.path(secret.namespace, secret.name)
        with self._lock:
            if path.exists():
                raise SecretExists(f"secret {secret.name} already exists; update it with PUT")
            path.parent.mkdir(mode=0o700, exist_ok=True)
            tmp = path.with_name(f".tmp-{secret.name}")
            _write(tmp, secret.value or b"", os.O_CREAT | os.O_TRUNC)
            os.replace(tmp, path)

    def update(self, secret: Secret) -> None:
        """A new value for an existing secret, written in place; SecretNotFound if none."""
        path = self.path(secret.namespace, secret.name)
        with self._lock:
            if not path.is_file():
                raise SecretNotFound(f"unable to find secret: {secret.name}")
            _write(path, secret.value or b"", os.O_TRUNC)

    def delete(self, namespace: str, name: str) -> None:
        """Remove a secret; SecretNotFound if there is none."""
        path = self.path(namespace, name)
        with self._lock:
            try:
                path.unlink()
            except FileNotFoundError:
                raise SecretNotFound(f"unable to find secret: {name}") from None

    def _adopt_flat_files(self) -> None:
        # state dirs from before namespaces kept <root>/<name>: those are openfaas-fn's
        flat = [p for p in self.root.iterdir() if p.is_file()]
        if flat:
            (self.root / NAMESPACE).mkdir(mode=0o700, exist_ok=True)
            for path in flat:
                os.replace(path, self.root / NAMESPACE / path.name)


def _write(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    path.chmod(0o644)
