"""The blob files: content-addressed, verified, published by rename (the `BlobStore` contract).

Layout (DESIGN.md, Store)::

    <data>/blobs/sha256/<2 hex>/<hex>   verified content, written only by rename
    <data>/tmp/                         fills in progress (see fill.py), their lock files
    <data>/quarantine/                  blobs scrub.py found bad

A file reaches `blobs/` only after its sha256 and size were checked and its bytes were
fsynced (then the rename, then the directory), so the files are the truth and the index
(index.py) is a cache of facts about them: a row whose file vanished is dropped when
noticed, and a file without a row is adopted. Readers keep an open descriptor, so a blob
can be unlinked under a reader safely.

Serving never depends on an index write: an access time that cannot be recorded (disk
full, database locked) is logged and counted, and the hit is served all the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Protocol

from . import diskio, locks
from .errors import BlobUnknown, DigestMismatch, NoRoom, StoreError
from .index import BlobInfo, Index
from .reference import digest_hex


class BlobStore(Protocol):
    """Content-addressed local storage."""

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob's info, or None when it is not stored (never raises BlobUnknown)."""

    def open(self, digest: str) -> tuple[int, BlobInfo]:
        """An open read-only descriptor and info; raises BlobUnknown when not stored."""

    def commit_verified(
        self,
        tmp_path: str,
        digest: str,
        size: int | None,
        media_type: str | None,
        sha256_hex: str,
        actual_size: int,
    ) -> BlobInfo:
        """Rename a finished temp file into place if `sha256_hex`/`actual_size` (computed by
        the writer) match digest and size; else remove it and raise DigestMismatch."""


class BlobFiles:
    """The files under `<data_dir>`, their facts in `index`; implements BlobStore."""

    def __init__(self, data_dir: str, index: Index) -> None:
        self.index = index
        self.blob_dir = os.path.join(data_dir, "blobs", "sha256")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        self.quarantine_dir = os.path.join(data_dir, "quarantine")
        os.makedirs(self.blob_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    def blob_path(self, digest: str) -> str:
        """Where a blob lives once verified."""
        hexd = digest_hex(digest)
        return os.path.join(self.blob_dir, hexd[:2], hexd)

    # -- reading ----------------------------------------------------------------------------

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob's info, or None when it is not stored."""
        path = self.blob_path(digest)
        info = self.index.blob(digest)
        exists = os.path.exists(path)
        if info is not None and exists:
            return info
        if info is not None:  # the file went away (evicted by hand, disk trouble): forget it
            self.index.drop_row(digest)
            return None
        if exists:  # verified file without a row: a crash between rename and insert
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                return None
            try:
                return self.index.add_blob(digest, size, None)
            except StoreError as exc:  # a full disk must not hide a stored blob
                self.index.failed("adopting", digest, exc)
                return self._unindexed(digest, size, None)
        return None

    def open(self, digest: str) -> tuple[int, BlobInfo]:
        """Open a stored blob for reading and count the access; raises BlobUnknown."""
        info = self.stat(digest)
        if info is None:
            raise BlobUnknown(f"blob {digest} is not cached", detail={"digest": digest})
        try:
            fd = os.open(self.blob_path(digest), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise BlobUnknown(f"blob {digest} is not cached", detail={"digest": digest}) from exc
        self.index.touch(digest)  # never raises: the descriptor cannot leak
        return fd, info

    def read_bytes(self, digest: str) -> tuple[bytes, BlobInfo]:
        """A small stored blob (a manifest) in memory; raises BlobUnknown."""
        fd, info = self.open(digest)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(), info

    # -- writing ----------------------------------------------------------------------------

    def commit_verified(
        self,
        tmp_path: str,
        digest: str,
        size: int | None,
        media_type: str | None,
        sha256_hex: str,
        actual_size: int,
    ) -> BlobInfo:
        """Rename a temp file whose hash the caller computed while writing it."""
        if f"sha256:{sha256_hex}" != digest or (size is not None and size != actual_size):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise DigestMismatch(
                f"content does not match {digest}: got sha256:{sha256_hex}, {actual_size} bytes"
                + (f" (expected {size})" if size is not None else ""),
                detail={"digest": digest},
            )
        final = self.blob_path(digest)
        try:
            diskio.fsync_file(tmp_path)
            diskio.makedirs_durable(os.path.dirname(final))
            os.rename(tmp_path, final)
            diskio.fsync_dir(os.path.dirname(final))
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise StoreError(f"cannot publish {digest}: {exc}") from exc
        try:
            return self.index.add_blob(digest, actual_size, media_type)
        except StoreError as exc:  # the file is the truth: the next stat() adopts it
            self.index.failed("indexing", digest, exc)
            return self._unindexed(digest, actual_size, media_type)

    def put_bytes(self, digest: str, data: bytes, media_type: str | None) -> BlobInfo:
        """Store small content (a manifest) after verifying it."""
        sha = hashlib.sha256(data).hexdigest()
        if f"sha256:{sha}" != digest:
            raise DigestMismatch(
                f"content does not match {digest}: got sha256:{sha}", detail={"digest": digest}
            )
        existing = self.stat(digest)
        if existing is not None:
            return existing
        try:
            fd, tmp = new_temp(self.tmp_dir, digest_hex(digest))
        except OSError as exc:
            raise NoRoom(f"cannot store {digest}: {exc}", reason="disk_full") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise NoRoom(f"cannot store {digest}: {exc}", reason="disk_full") from exc
        return self.commit_verified(tmp, digest, len(data), media_type, sha, len(data))

    def delete(self, digest: str) -> bool:
        """Remove a blob file and its row; open readers keep their bytes. Blobs derived from
        it (transcode.py) go with it: they are only ever offered in its place."""
        for child in self.index.derived_from(digest):
            self.delete(child)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(digest))
        return self.index.forget_blob(digest)

    def _unindexed(self, digest: str, size: int, media_type: str | None) -> BlobInfo:
        now = self.index.clock()
        return BlobInfo(digest, size, media_type, now, 0, False)

    # -- fills in flight --------------------------------------------------------------------

    def live_lock_path(self, digest: str) -> str:
        """The lock a client streaming the fill of `digest` holds shared (see fill.py)."""
        return os.path.join(self.tmp_dir, f"{digest_hex(digest)}.live.lock")

    def live_readers(self) -> list[str]:
        """Digests whose fill a client, in any process, is still streaming."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp_dir):
                if name.endswith(".live.lock") and locks.is_held(os.path.join(self.tmp_dir, name)):
                    out.append(f"sha256:{name[: -len('.live.lock')]}")
        return out

    def inflight_bytes(self) -> int:
        """Bytes that fills in progress (in any process) will add when they land."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp_dir):
                if name.endswith(".fill") and not os.path.exists(self.blob_path(f"sha256:{name[:-5]}")):
                    try:
                        with open(os.path.join(self.tmp_dir, name), encoding="utf-8") as fh:
                            total += int(json.load(fh).get("size") or 0)
                    except (OSError, ValueError, TypeError, AttributeError):
                        continue
        return total


def new_temp(directory: str, prefix: str) -> tuple[int, str]:
    """Create a unique temp file for a fill; returns (write fd, path)."""
    name = os.path.join(directory, f"{prefix}.{os.getpid()}.{os.urandom(6).hex()}.part")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), name
