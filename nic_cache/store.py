"""The local store: content-addressed files on disk plus a SQLite index (WAL).

Layout (DESIGN.md, Store)::

    <data>/blobs/sha256/<2 hex>/<hex>   verified content, written only by rename
    <data>/tmp/                         fills in progress (see fill.py)
    <data>/index.sqlite                 sizes, media types, access times, hits, pins,
                                        manifest -> blob edges, tags, pull log

A file reaches `blobs/` only after its sha256 and size were checked and its bytes were
fsynced (then the rename, then the directory), so the files are the truth and the index is
a cache of facts about them: a row whose file vanished is dropped when noticed, and a file
without a row is adopted. A crash therefore never breaks the index; `nic_cache/scrub.py`
checks the files against the index at start-up and quarantines a bad one.
Readers keep an open descriptor, so eviction can unlink a blob under a reader safely.

Serving never depends on an index write: an access time that cannot be recorded (disk
full, database locked) is logged and counted, and the hit is served all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from . import diskio, locks
from .errors import BlobUnknown, DigestMismatch, NoRoom, StoreError
from .policy import LRU, Entry, Policy, Prefetch
from .policy_state import choose_victims, predicted_prefetch
from .reference import digest_hex
from .sqlitedb import Database

log = logging.getLogger(__name__)
PRUNE_EVERY = 256  # pull-log inserts between two prunings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    media_type  TEXT,
    created     REAL NOT NULL,
    last_access REAL NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0,
    pinned      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blobs_lru ON blobs (pinned, last_access);
CREATE TABLE IF NOT EXISTS manifest_refs (
    manifest TEXT NOT NULL,
    child    TEXT NOT NULL,
    PRIMARY KEY (manifest, child)
);
CREATE INDEX IF NOT EXISTS manifest_refs_child ON manifest_refs (child);
CREATE TABLE IF NOT EXISTS tags (
    upstream   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (upstream, repository, tag)
);
CREATE TABLE IF NOT EXISTS pulls (
    ts         REAL NOT NULL,
    image      TEXT NOT NULL,
    digest     TEXT,
    client     TEXT,
    kind       TEXT NOT NULL DEFAULT 'pull'
);
CREATE INDEX IF NOT EXISTS pulls_ts ON pulls (ts);
CREATE TABLE IF NOT EXISTS derived (
    source     TEXT NOT NULL,
    encoding   TEXT NOT NULL,
    digest     TEXT,
    diff_id    TEXT,
    reason     TEXT,
    created    REAL NOT NULL,
    PRIMARY KEY (source, encoding)
);
CREATE INDEX IF NOT EXISTS derived_digest ON derived (digest);
CREATE TABLE IF NOT EXISTS transcode_optout (
    image      TEXT PRIMARY KEY,
    ts         REAL NOT NULL
);
"""


@dataclass(frozen=True)
class BlobInfo:
    """What the index knows about one stored blob."""

    digest: str
    size: int
    media_type: str | None
    last_access: float
    hits: int
    pinned: bool


@dataclass(frozen=True)
class TagEntry:
    """A tag's digest as last seen upstream, and when."""

    upstream: str
    repository: str
    tag: str
    digest: str
    media_type: str
    fetched_at: float


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


class Store:
    """Blob files plus the SQLite index. Safe to share across threads and processes."""

    def __init__(
        self,
        data_dir: str,
        *,
        capacity: int = 0,
        low_watermark: float = 0.9,
        clock: Callable[[], float] = time.time,
        pull_log_max_age: float = 30 * 86400.0,
        pull_log_max_rows: int = 100_000,
        on_index_error: Callable[[], None] = lambda: None,
        policy: Callable[[], Policy] = LRU,
    ) -> None:
        self.data_dir = data_dir
        self.capacity = capacity
        self.low_watermark = low_watermark
        self.clock = clock
        self.pull_log_max_age = pull_log_max_age
        self.pull_log_max_rows = pull_log_max_rows
        self.on_index_error = on_index_error
        self.policy = policy  # makes the eviction policy (nic_cache/policy) fed from the index
        # told (seconds, of which the policy's) after each eviction that dropped blobs
        self.on_evicted: Callable[[float, float], None] = lambda seconds, policy_seconds: None
        self.blob_dir = os.path.join(data_dir, "blobs", "sha256")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        self.quarantine_dir = os.path.join(data_dir, "quarantine")
        self.db_path = os.path.join(data_dir, "index.sqlite")
        self._database = Database(self.db_path, "index")
        try:
            os.makedirs(self.blob_dir, exist_ok=True)
            os.makedirs(self.tmp_dir, exist_ok=True)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open store at {data_dir}: {exc}") from exc

    # -- plumbing -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        return self._database.conn()

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._database.transaction()

    def _query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"index query failed: {exc}") from exc

    def close(self) -> None:
        """Close this thread's index connection."""
        self._database.close()

    def blob_path(self, digest: str) -> str:
        """Where a blob lives once verified."""
        hexd = digest_hex(digest)
        return os.path.join(self.blob_dir, hexd[:2], hexd)

    # -- blobs ----------------------------------------------------------------------------

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob's info, or None when it is not stored."""
        path = self.blob_path(digest)
        rows = self._query("SELECT * FROM blobs WHERE digest = ?", (digest,))
        exists = os.path.exists(path)
        if rows and exists:
            return _info(rows[0])
        if rows:  # the file went away (evicted by hand, disk trouble): forget it
            self._best_effort("DELETE FROM blobs WHERE digest = ?", [(digest,)])
            return None
        if exists:  # verified file without a row: a crash between rename and insert
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:
                return None
            try:
                return self._index(digest, size, None)
            except StoreError as exc:  # a full disk must not hide a stored blob
                self._index_failed("adopting", digest, exc)
                now = self.clock()
                return BlobInfo(digest, size, None, now, 0, False)
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
        self.touch(digest)  # never raises: the descriptor cannot leak
        return fd, info

    def read_bytes(self, digest: str) -> tuple[bytes, BlobInfo]:
        """A small stored blob (a manifest) in memory; raises BlobUnknown."""
        fd, info = self.open(digest)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(), info

    def touch(self, digest: str) -> bool:
        """Record an access for LRU and hit counts; False (logged, counted) if the index could
        not be written. Never raises: a hit must not fail on bookkeeping."""
        return self._best_effort(
            "UPDATE blobs SET last_access = ?, hits = hits + 1 WHERE digest = ?", [(self.clock(), digest)]
        )

    def _best_effort(self, sql: str, rows: list[tuple[object, ...]]) -> bool:
        try:
            with self._db() as db:
                db.executemany(sql, rows)
            return True
        except StoreError as exc:
            self._index_failed("updating", str(rows[0][-1]) if rows else "", exc)
            return False

    def _index_failed(self, doing: str, digest: str, exc: BaseException) -> None:
        self.on_index_error()
        log.warning("index write failed while %s %s (served anyway): %s", doing, digest, exc)

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
            return self._index(digest, actual_size, media_type)
        except StoreError as exc:  # the file is the truth: the next stat() adopts it
            self._index_failed("indexing", digest, exc)
            now = self.clock()
            return BlobInfo(digest, actual_size, media_type, now, 0, False)

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
            fd, tmp = _mkstemp(self.tmp_dir, digest_hex(digest))
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

    def _index(self, digest: str, size: int, media_type: str | None) -> BlobInfo:
        now = self.clock()
        with self._db() as db:
            db.execute(
                "INSERT INTO blobs (digest, size, media_type, created, last_access) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
                "media_type = COALESCE(excluded.media_type, media_type)",
                (digest, size, media_type, now, now),
            )
            row = db.execute("SELECT * FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return _info(row)

    def delete_blob(self, digest: str) -> bool:
        """Remove a blob file and its row; open readers keep their bytes. Blobs derived from
        it (transcode.py) go with it: they are only ever offered in its place."""
        derived = [r[0] for r in self._query(
            "SELECT digest FROM derived WHERE source = ? AND digest IS NOT NULL", (digest,))]  # fmt: skip
        for child in derived:
            self.delete_blob(child)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.blob_path(digest))
        with self._db() as db:
            cur = db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
            db.execute("DELETE FROM manifest_refs WHERE manifest = ?", (digest,))
            db.execute("DELETE FROM derived WHERE source = ? OR digest = ?", (digest, digest))
        return cur.rowcount > 0

    def set_pinned(self, digests: Iterable[str], pinned: bool) -> None:
        """Pin (never evict) or unpin blobs."""
        with self._db() as db:
            db.executemany(
                "UPDATE blobs SET pinned = ? WHERE digest = ?", [(int(pinned), d) for d in digests]
            )

    def pinned(self) -> set[str]:
        """Digests of every pinned blob."""
        return {r[0] for r in self._query("SELECT digest FROM blobs WHERE pinned = 1")}

    def refresh(self, digests: Iterable[str]) -> None:
        """Mark blobs as recently used for LRU without counting a hit (a prewarm found them)."""
        with self._db() as db:
            db.executemany(
                "UPDATE blobs SET last_access = ? WHERE digest = ?", [(self.clock(), d) for d in digests]
            )

    def usage(self) -> tuple[int, int]:
        """(bytes, blob count) in the store."""
        row = self._query("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM blobs")[0]
        return int(row[0]), int(row[1])

    def recover(self) -> list[str]:
        """Collect what crashed fills left in tmp/ (never a fill still running); see scrub.py."""
        from .scrub import collect_temp

        return collect_temp(self)

    # -- space ----------------------------------------------------------------------------

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

    def admit(self, size: int | None) -> None:
        """Make room for a fill of `size` bytes under the budget, counting fills in flight;
        raises NoRoom when the blob can never fit (`too_big`) or cannot fit now (`budget`)."""
        if self.capacity <= 0 or size is None:
            return
        if size > self.capacity * self.low_watermark:
            raise NoRoom(
                f"blob of {size} bytes is larger than the cache keeps "
                f"({self.low_watermark:.0%} of {self.capacity})", reason="too_big",
            )
        if self._demand(size) <= self.capacity:
            return
        try:
            self.evict(incoming=size)
        except StoreError as exc:  # the index cannot even record a deletion: the disk is full
            raise NoRoom(f"cannot make room for {size} bytes: {exc}", reason="disk_full") from exc
        if self._demand(size) > self.capacity:
            raise NoRoom(f"no room for {size} more bytes under the budget right now", reason="budget")

    def _demand(self, incoming: int = 0) -> int:
        return self.usage()[0] + self.inflight_bytes() + incoming

    # -- manifests and tags ---------------------------------------------------------------

    def link_manifest(self, manifest: str, children: Iterable[str]) -> None:
        """Record which blobs and child manifests a manifest needs."""
        with self._db() as db:
            db.executemany(
                "INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)",
                [(manifest, c) for c in children],
            )

    def children(self, manifest: str) -> list[str]:
        """What a stored manifest references (its config, layers, or child manifests)."""
        rows = self._query("SELECT child FROM manifest_refs WHERE manifest = ?", (manifest,))
        return [r[0] for r in rows]

    def closure(self, manifest: str) -> list[str]:
        """The manifest and everything it references, transitively."""
        seen: dict[str, None] = {}
        todo = [manifest]
        while todo:
            d = todo.pop()
            if d not in seen:
                seen[d] = None
                todo.extend(self.children(d))
        return list(seen)

    def get_tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        """The cached digest of a tag, or None."""
        rows = self._query(
            "SELECT * FROM tags WHERE upstream = ? AND repository = ? AND tag = ?",
            (upstream, repository, tag),
        )
        return TagEntry(**dict(rows[0])) if rows else None

    def set_tag(self, upstream: str, repository: str, tag: str, digest: str, media_type: str) -> None:
        """Remember a tag's digest as just confirmed upstream."""
        with self._db() as db:
            db.execute(
                "INSERT INTO tags VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "digest = excluded.digest, media_type = excluded.media_type, "
                "fetched_at = excluded.fetched_at",
                (upstream, repository, tag, digest, media_type, self.clock()),
            )

    def tags(self, upstream: str | None = None, repository: str | None = None) -> list[TagEntry]:
        """Every cached tag, optionally of one upstream/repository."""
        sql, args = "SELECT * FROM tags WHERE 1=1", list[str]()
        if upstream is not None:
            sql, args = sql + " AND upstream = ?", [*args, upstream]
        if repository is not None:
            sql, args = sql + " AND repository = ?", [*args, repository]
        return [TagEntry(**dict(r)) for r in self._query(sql + " ORDER BY 1, 2, 3", args)]

    def delete_tag(self, upstream: str, repository: str, tag: str) -> None:
        """Forget a tag."""
        with self._db() as db:
            db.execute(
                "DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ?",
                (upstream, repository, tag),
            )

    def referenced_elsewhere(
        self, digests: Iterable[str], excluding_tags: set[tuple[str, str, str]]
    ) -> set[str]:
        """Which of `digests` are still needed by some tag other than `excluding_tags`."""
        keep: set[str] = set()
        for entry in self.tags():
            if (entry.upstream, entry.repository, entry.tag) not in excluding_tags:
                keep.update(self.closure(entry.digest))
        return keep & set(digests)

    # -- pull log -------------------------------------------------------------------------

    def log_pull(self, image: str, digest: str | None, client: str | None, kind: str = "pull") -> None:
        """Record a manifest pull or a deploy event for popularity; every PRUNE_EVERY rows
        the log is cut to `pull_log_max_age` and `pull_log_max_rows`."""
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO pulls (ts, image, digest, client, kind) VALUES (?, ?, ?, ?, ?)",
                (self.clock(), image, digest, client, kind),
            )
            if (cur.lastrowid or 0) % PRUNE_EVERY == 0:
                self._prune(db)

    def prune(self) -> None:
        """Cut the pull log to its age and row bounds and forget long-unused tags."""
        with self._db() as db:
            self._prune(db)

    def _prune(self, db: sqlite3.Connection) -> None:
        horizon = self.clock() - self.pull_log_max_age
        db.execute("DELETE FROM pulls WHERE ts < ?", (horizon,))
        if self.pull_log_max_rows > 0:
            db.execute(
                "DELETE FROM pulls WHERE rowid <= (SELECT MAX(rowid) FROM pulls) - ?",
                (self.pull_log_max_rows,),
            )
        # a tag whose manifest is gone and that nobody asked for in the log's span
        db.execute(
            "DELETE FROM tags WHERE fetched_at < ? AND digest NOT IN (SELECT digest FROM blobs)",
            (horizon,),
        )

    def pulls(self, since: float = 0.0) -> list[sqlite3.Row]:
        """The pull log since a time."""
        return self._query("SELECT * FROM pulls WHERE ts >= ? ORDER BY ts", (since,))

    # -- eviction -------------------------------------------------------------------------

    def evict(self, keep: str | None = None, incoming: int = 0) -> list[str]:
        """When over capacity, drop the blobs the eviction policy chooses (never pinned ones)
        down to the low watermark (never `keep`, the blob just filled, which its readers are
        about to get, nor a blob whose fill a client still streams). Fills in flight and
        `incoming` bytes count as used. One process evicts at a time; others skip. Returns
        what went."""
        if self.capacity <= 0:
            return []
        used = self._demand(incoming)
        if used <= self.capacity:
            return []
        lock_fd = os.open(os.path.join(self.tmp_dir, "evict.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            started = time.monotonic()
            policy_seconds = 0.0
            used = self._demand(incoming)
            need = used - int(self.capacity * self.low_watermark)
            held = {k for k in (keep, *self.live_readers()) if k}
            # derived blobs (re-encodings of a stored layer, transcoder.py) go first: their source
            # stands in for them; the policy chooses among the rest
            victims: list[str] = []
            for row in self._query(
                "SELECT digest, size FROM blobs WHERE pinned = 0 AND digest IN "
                "(SELECT digest FROM derived WHERE digest IS NOT NULL) ORDER BY last_access, created"
            ):
                if need <= 0:
                    break
                if row[0] not in held:
                    victims.append(row[0])
                    need -= row[1]
            if need > 0:  # the configured policy, with what it learned (policy_state.py)
                chose = time.monotonic()
                rows = self._query("SELECT * FROM blobs ORDER BY last_access, created")
                victims += choose_victims(self._database, self.policy(), (_entry(r) for r in rows),
                                          self.closure, need=need, now=self.clock(),
                                          keep=[*held, *victims])  # fmt: skip
                policy_seconds = time.monotonic() - chose
            for digest in victims:
                self.delete_blob(digest)
            if victims:
                self.on_evicted(time.monotonic() - started, policy_seconds)
            return victims
        finally:
            os.close(lock_fd)

    def predicted(self, policy: Policy, budget: int) -> list[Prefetch]:
        """What `policy`, fed with what the eviction policy learned, would prefetch now within
        `budget` bytes (read-only: it takes no lock and saves nothing)."""
        rows = self._query("SELECT * FROM blobs ORDER BY last_access, created")
        return predicted_prefetch(self._database, policy, (_entry(r) for r in rows), self.closure,
                                  now=self.clock(), budget=budget)  # fmt: skip


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(row["digest"], row["size"], row["created"], row["last_access"], row["hits"],
                 bool(row["pinned"]))  # fmt: skip


def _info(row: sqlite3.Row) -> BlobInfo:
    return BlobInfo(
        digest=row["digest"],
        size=row["size"],
        media_type=row["media_type"],
        last_access=row["last_access"],
        hits=row["hits"],
        pinned=bool(row["pinned"]),
    )


def _mkstemp(directory: str, prefix: str) -> tuple[int, str]:
    name = os.path.join(directory, f"{prefix}.{os.getpid()}.{os.urandom(6).hex()}.part")
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), name


def new_temp(directory: str, prefix: str) -> tuple[int, str]:
    """Create a unique temp file for a fill; returns (write fd, path)."""
    return _mkstemp(directory, prefix)
