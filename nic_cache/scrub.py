"""Checking the store against its index, quarantining bad blobs, collecting crashed fills.

- `check(store, digests=...)` compares every indexed blob with its file: a missing file drops
  the row, a wrong size (or, with `digests`, a wrong sha256) moves the file to
  `<data>/quarantine/` and drops the row, so the blob is never served again and the next
  request fills it anew. A file without a row is hashed and adopted, or quarantined.
  `cache serve` runs it (sizes by default, `verify_on_start`) before workers start;
  `faas-accel cache verify` runs it with digests, on a running cache too.
- `collect_temp(store)` removes what crashed fills left in `tmp/`: part files, fill
  pointers and lock files, but only for digests whose fill lock no one holds, and never a
  file of a live process made in the last minutes (a manifest being written).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import locks
from .errors import StoreError
from .store import Store

if TYPE_CHECKING:
    from .config import Config

QUARANTINE_KEEP = 16  # quarantined files kept for a look; older ones are deleted
YOUNG = 600.0  # seconds a temp file of a live process is left alone
_HEX = re.compile(r"[0-9a-f]{64}")
_PID = re.compile(r"^[0-9a-f]{64}\.(?:fill\.)?(\d+)\.")


@dataclass
class Report:
    """What a check found; `problems` lists one line per blob acted on."""

    checked: int = 0
    bytes: int = 0
    dropped: int = 0  # rows whose file was gone
    adopted: int = 0  # verified files that had no row
    quarantined: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked, "bytes": self.bytes, "dropped": self.dropped,
            "adopted": self.adopted, "quarantined": self.quarantined, "problems": self.problems,
        }  # fmt: skip


def sha256_file(path: str) -> str:
    """The sha256 digest of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def check(store: Store, *, digests: bool = False) -> Report:
    """Verify sizes (and with `digests`, content) of every stored blob; see the module doc."""
    report = Report()
    try:
        rows = store.index.sizes()
    except StoreError as exc:
        raise StoreError(f"cannot read the index to check it: {exc}") from exc
    indexed = set()
    for digest, size in rows:
        indexed.add(digest)
        path = store.blob_path(digest)
        try:
            actual = os.path.getsize(path)
        except FileNotFoundError:
            store.index.drop_row(digest)
            report.dropped += 1
            continue
        report.checked += 1
        report.bytes += actual
        if actual != size:
            quarantine(store, digest, f"{actual} bytes on disk, {size} in the index", report)
        elif digests and sha256_file(path) != digest:
            quarantine(store, digest, "content does not hash to its digest", report)
    for digest in _files(store):
        if digest in indexed:
            continue
        path = store.blob_path(digest)
        if sha256_file(path) != digest:
            quarantine(store, digest, "unindexed file does not hash to its name", report)
            continue
        store.stat(digest)  # adopts it
        report.adopted += 1
    return report


def quarantine(store: Store, digest: str, why: str, report: Report | None = None) -> None:
    """Take a blob out of service: its file goes to `quarantine/`, its row away."""
    os.makedirs(store.quarantine_dir, exist_ok=True)
    hexd = digest.split(":", 1)[1]
    with contextlib.suppress(FileNotFoundError):
        os.rename(store.blob_path(digest), os.path.join(store.quarantine_dir, f"{hexd}.{int(time.time())}"))
    store.index.drop_row(digest)
    kept = sorted(os.scandir(store.quarantine_dir), key=lambda e: e.stat().st_mtime, reverse=True)
    for old in kept[QUARANTINE_KEEP:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old.path)
    if report is not None:
        report.quarantined.append(digest)
        report.problems.append(f"{digest}: {why}; quarantined")


def _files(store: Store) -> list[str]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for sub in os.scandir(store.blob_dir):
            if sub.is_dir():
                out += [f"sha256:{e.name}" for e in os.scandir(sub.path) if _HEX.fullmatch(e.name)]
    return out


def collect_temp(store: Store) -> list[str]:
    """Remove what crashed fills left in tmp/; returns the names removed."""
    removed: list[str] = []
    try:
        names = sorted(os.listdir(store.tmp_dir))
    except FileNotFoundError:
        return removed
    by_digest: dict[str, list[str]] = {}
    for name in names:
        if name.endswith(".lock"):
            continue
        hexd = name.split(".", 1)[0]
        if _HEX.fullmatch(hexd):
            by_digest.setdefault(hexd, []).append(name)
    for hexd, leftovers in by_digest.items():
        lock = os.path.join(store.tmp_dir, f"{hexd}.lock")
        fd = locks.acquire(lock)
        if fd is None:
            continue  # a live fill (perhaps of an orphaned worker): its files are in use
        try:
            for name in leftovers:
                path = os.path.join(store.tmp_dir, name)
                if _in_use(name, path):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed.append(name)
        finally:
            locks.release(fd, lock)
    for name in names:
        if name.endswith(".lock") and locks.remove_if_free(os.path.join(store.tmp_dir, name)):
            removed.append(name)
    return removed


def _in_use(name: str, path: str) -> bool:
    """A recent temp file of a process still alive (a manifest being stored)."""
    match = _PID.match(name)
    if match is None or not _alive(int(match.group(1))):
        return False
    try:
        return time.time() - os.path.getmtime(path) < YOUNG
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def startup(config: Config) -> str:
    """What `cache serve` does before workers start: check (per `verify_on_start`), collect."""
    from .app import open_store

    store = open_store(config)
    try:
        parts = []
        if config.verify_on_start != "off":
            report = check(store, digests=config.verify_on_start == "digests")
            parts.append(
                f"checked {report.checked} blobs ({config.verify_on_start}): "
                f"{len(report.quarantined)} quarantined, {report.dropped} missing, {report.adopted} adopted"
            )
            parts += report.problems
        parts.append(f"collected {len(collect_temp(store))} leftover temp/lock files")
        store.prune()
        return "; ".join(parts)
    finally:
        store.close()
