"""The store's index (`<data>/index.sqlite`, WAL): facts about the blob files, as typed records.

Tables: `blobs` (size, media type, access time, hits, pin of every stored blob),
`manifest_refs` (manifest -> blob and child-manifest edges), `tags` (tag -> digest, when it
was confirmed upstream), `pulls` (the pull log popularity reads), and two kept next to them
by derived.py (`derived`, `transcode_optout`); access.py adds its own. The files are the
truth (blobs.py): a row says what is known about a file, and a crash never breaks it.

Pure SQL and records: nothing here touches a blob file.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import StoreError
from .policy import Entry
from .sqlitedb import Database

log = logging.getLogger("nic_cache.store")
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


@dataclass(frozen=True)
class PullRecord:
    """One row of the pull log: a manifest pull by tag, or a deploy the hook reported."""

    ts: float
    image: str
    digest: str | None
    client: str | None  # the VM: the address the pull or the report came from (or its name)
    kind: str  # "pull" | "deploy"


class Index:
    """The index database; safe to share across threads and processes."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        pull_log_max_age: float = 30 * 86400.0,
        pull_log_max_rows: int = 100_000,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.pull_log_max_age = pull_log_max_age
        self.pull_log_max_rows = pull_log_max_rows
        self.on_error = on_error  # counts a best-effort write that failed (metrics)
        self._database = Database(path, "index")
        try:
            self.conn().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the index {path}: {exc}") from exc

    # -- plumbing (also for the tables derived.py and access.py keep here) -----------------

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit)."""
        return self._database.conn()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; sqlite3 errors raise StoreError."""
        return self._database.transaction()

    def query(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        """The rows of a read; StoreError when it fails."""
        try:
            return self.conn().execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"index query failed: {exc}") from exc

    def best_effort(self, sql: str, rows: list[tuple[object, ...]], doing: str = "updating") -> bool:
        """Run a write for every row; False (logged, counted) instead of raising when it fails:
        a hit must not fail on bookkeeping."""
        try:
            with self.transaction() as db:
                db.executemany(sql, rows)
            return True
        except StoreError as exc:
            self.failed(doing, str(rows[0][-1]) if rows else "", exc)
            return False

    def failed(self, doing: str, digest: str, exc: BaseException) -> None:
        """Log and count an index write that could not be made (the blob is served anyway)."""
        self.on_error()
        log.warning("index write failed while %s %s (served anyway): %s", doing, digest, exc)

    def close(self) -> None:
        """Close this thread's connection."""
        self._database.close()

    # -- blobs ------------------------------------------------------------------------------

    def blob(self, digest: str) -> BlobInfo | None:
        """The row of `digest`, or None."""
        rows = self.query("SELECT * FROM blobs WHERE digest = ?", (digest,))
        return _info(rows[0]) if rows else None

    def add_blob(self, digest: str, size: int, media_type: str | None) -> BlobInfo:
        """Record a stored blob (a known one keeps its row, gaining a media type it lacked)."""
        now = self.clock()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO blobs (digest, size, media_type, created, last_access) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET "
                "media_type = COALESCE(excluded.media_type, media_type)",
                (digest, size, media_type, now, now),
            )
            row = db.execute("SELECT * FROM blobs WHERE digest = ?", (digest,)).fetchone()
        return _info(row)

    def forget_blob(self, digest: str) -> bool:
        """Drop a blob's row, its manifest edges and its derivations; whether it had a row."""
        with self.transaction() as db:
            cur = db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
            db.execute("DELETE FROM manifest_refs WHERE manifest = ?", (digest,))
            db.execute("DELETE FROM derived WHERE source = ? OR digest = ?", (digest, digest))
        return cur.rowcount > 0

    def drop_row(self, digest: str) -> bool:
        """Best effort: forget a blob whose file is gone (or quarantined)."""
        return self.best_effort("DELETE FROM blobs WHERE digest = ?", [(digest,)])

    def derived_from(self, digest: str) -> list[str]:
        """The stored blobs derived from `digest` (its re-encodings)."""
        rows = self.query("SELECT digest FROM derived WHERE source = ? AND digest IS NOT NULL", (digest,))
        return [r[0] for r in rows]

    def touch(self, digest: str) -> bool:
        """Record an access for LRU and hit counts; False (logged, counted) if it could not be
        written. Never raises."""
        return self.best_effort(
            "UPDATE blobs SET last_access = ?, hits = hits + 1 WHERE digest = ?", [(self.clock(), digest)]
        )

    def set_pinned(self, digests: Iterable[str], pinned: bool) -> None:
        """Pin (never evict) or unpin blobs."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE blobs SET pinned = ? WHERE digest = ?", [(int(pinned), d) for d in digests]
            )

    def pinned(self) -> set[str]:
        """Digests of every pinned blob."""
        return {r[0] for r in self.query("SELECT digest FROM blobs WHERE pinned = 1")}

    def refresh(self, digests: Iterable[str]) -> None:
        """Mark blobs as recently used without counting a hit (a prewarm found them)."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE blobs SET last_access = ? WHERE digest = ?", [(self.clock(), d) for d in digests]
            )

    def usage(self) -> tuple[int, int]:
        """(bytes, blob count) in the store."""
        row = self.query("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM blobs")[0]
        return int(row[0]), int(row[1])

    def sizes(self) -> list[tuple[str, int]]:
        """(digest, size) of every row (what scrub.py checks the files against)."""
        return [(r[0], int(r[1])) for r in self.query("SELECT digest, size FROM blobs")]

    def entries(self) -> list[Entry]:
        """Every row as the policy core reads it, least recently used first."""
        return [_entry(r) for r in self.query("SELECT * FROM blobs ORDER BY last_access, created")]

    def derived_entries(self) -> list[Entry]:
        """The unpinned derived blobs (re-encodings), least recently used first."""
        rows = self.query(
            "SELECT * FROM blobs WHERE pinned = 0 AND digest IN "
            "(SELECT digest FROM derived WHERE digest IS NOT NULL) ORDER BY last_access, created"
        )
        return [_entry(r) for r in rows]

    # -- manifests ------------------------------------------------------------------------

    def link_manifest(self, manifest: str, children: Iterable[str]) -> None:
        """Record which blobs and child manifests a manifest needs."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO manifest_refs (manifest, child) VALUES (?, ?)",
                [(manifest, c) for c in children],
            )

    def children(self, manifest: str) -> list[str]:
        """What a stored manifest references (its config, layers, or child manifests)."""
        rows = self.query("SELECT child FROM manifest_refs WHERE manifest = ?", (manifest,))
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

    # -- tags -----------------------------------------------------------------------------

    def get_tag(self, upstream: str, repository: str, tag: str) -> TagEntry | None:
        """The cached digest of a tag, or None."""
        rows = self.query(
            "SELECT * FROM tags WHERE upstream = ? AND repository = ? AND tag = ?",
            (upstream, repository, tag),
        )
        return TagEntry(**dict(rows[0])) if rows else None

    def set_tag(self, upstream: str, repository: str, tag: str, digest: str, media_type: str) -> None:
        """Remember a tag's digest as just confirmed upstream."""
        with self.transaction() as db:
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
        return [TagEntry(**dict(r)) for r in self.query(sql + " ORDER BY 1, 2, 3", args)]

    def delete_tag(self, upstream: str, repository: str, tag: str) -> None:
        """Forget a tag."""
        with self.transaction() as db:
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
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO pulls (ts, image, digest, client, kind) VALUES (?, ?, ?, ?, ?)",
                (self.clock(), image, digest, client, kind),
            )
            if (cur.lastrowid or 0) % PRUNE_EVERY == 0:
                self._prune(db)

    def prune(self) -> None:
        """Cut the pull log to its age and row bounds and forget long-unused tags."""
        with self.transaction() as db:
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

    def pulls(self, since: float = 0.0) -> list[PullRecord]:
        """The pull log since a time, oldest first."""
        rows = self.query("SELECT * FROM pulls WHERE ts >= ? ORDER BY ts", (since,))
        return [PullRecord(r["ts"], r["image"], r["digest"], r["client"], r["kind"]) for r in rows]


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
