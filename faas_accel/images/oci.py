"""OCI image documents and the image layout they are written to.

Documents are serialised one way only (sorted keys, no spaces), so the same image
always has the same manifest digest. One layout holds every image, each under an
``org.opencontainers.image.ref.name`` equal to its full name
(``registry.lab/faas/hello:0.1.0``), which skopeo accepts as ``oci:DIR:NAME``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
DESCRIPTION = "org.opencontainers.image.description"
EPOCH = "1970-01-01T00:00:00Z"


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def image_config(
    run_config: Mapping[str, Any], diff_ids: Sequence[str], history: Sequence[str]
) -> bytes:
    """An image config for linux/amd64 with every time at the epoch."""
    return canonical_json({
        "architecture": "amd64",
        "os": "linux",
        "created": EPOCH,
        "config": dict(run_config),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": EPOCH, "created_by": step} for step in history],
    })


def image_manifest(
    config: bytes, layers: Sequence[dict[str, Any]], annotations: Mapping[str, str]
) -> bytes:
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, sha256_digest(config), len(config)),
        "layers": list(layers),
        "annotations": dict(annotations),
    })


class Layout:
    """An OCI image layout directory; ``save()`` writes index.json, keeping the
    entries of names not tagged again."""

    def __init__(self, root: Path) -> None:
        if ":" in str(root):
            raise ValueError(f"an OCI layout path cannot contain ':' (skopeo splits on it): {root}")
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        self._tags: dict[str, dict[str, Any]] = {}

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def put(self, data: bytes) -> str:
        digest = sha256_digest(data)
        target = self.blob_path(digest)
        if not target.exists():
            _write_atomic(target, data)
        return digest

    def put_file(self, digest: str, source: Path) -> None:
        """Add a blob that is already on disk (hard-linked when the filesystem allows)."""
        target = self.blob_path(digest)
        if target.exists():
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        tmp.replace(target)

    def tag(self, name: str, manifest: bytes) -> None:
        digest = self.put(manifest)
        self._tags[name] = descriptor(OCI_MANIFEST, digest, len(manifest), annotations={REF_NAME: name})

    def save(self) -> None:
        index_path = self.root / "index.json"
        entries: dict[str, dict[str, Any]] = {}
        if index_path.exists():
            for entry in json.loads(index_path.read_bytes()).get("manifests", []):
                entries[entry.get("annotations", {}).get(REF_NAME, entry["digest"])] = entry
        entries.update(self._tags)
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entries[k] for k in sorted(entries)]}
        _write_atomic(index_path, canonical_json(doc))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
