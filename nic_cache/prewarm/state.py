"""What the cache knows about prewarming, shared by every gunicorn worker (SQLite, WAL).

The scheduler is a separate process (`faas-accel prewarm run`) that talks to the cache's
admin API; any worker may answer it, so everything lives in `<data>/prewarm.sqlite`:

- `lease`: the one scheduler allowed to run schedules. A scheduler renews it with every
  heartbeat (`ttl` seconds); others stay standby and take over once it expires. A run can
  only be started by the holder, in the same transaction that checks the lease, so however
  many schedulers point at one cache, each trigger runs once.
- `registration`: the holder's schedules (with their next run), limits and config file.
- `runs`: every run, its result (images, bytes, seconds, errors) once finished.
- `requests`: runs asked for through the admin API; the holder claims them on heartbeat.
- `pins`: which image digest each pinning schedule holds pinned. Blob pin flags in the
  store are reconciled against it, so dropping a schedule (or a tag moving) unpins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from ..errors import NameInvalid, NameUnknown, StoreError
from ..policy.pins import reconcile
from ..sqlitedb import Database
from ..store import Store
from .budget import DEFAULT_LIMITS
from .errors import NotLeader, SchedulerUnavailable

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # a schedule name, in prewarm.yml and the admin API

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    holder   TEXT NOT NULL,
    expires  REAL NOT NULL,
    acquired REAL NOT NULL,
    seen     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS registration (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    holder  TEXT NOT NULL,
    body    TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    scheduled REAL,
    holder    TEXT NOT NULL,
    started   REAL NOT NULL,
    finished  REAL,
    state     TEXT NOT NULL,
    result    TEXT
);
CREATE INDEX IF NOT EXISTS runs_name ON runs (name, id);
CREATE UNIQUE INDEX IF NOT EXISTS runs_slot ON runs (name, scheduled) WHERE trigger = 'schedule';
CREATE TABLE IF NOT EXISTS requests (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    name      TEXT NOT NULL,
    requested REAL NOT NULL,
    claimed   REAL,
    run_id    INTEGER
);
CREATE TABLE IF NOT EXISTS pins (
    owner  TEXT NOT NULL,
    image  TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (owner, image)
);
"""
TRIGGERS = ("schedule", "request", "manual")  # manual: `faas-accel prewarm once`, no lease needed


class PrewarmState:
    """The prewarm tables next to a store's index; safe across threads and processes."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.db_path = os.path.join(store.data_dir, "prewarm.sqlite")
        self._database = Database(self.db_path, "prewarm state")
        try:
            self._conn().executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.db_path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        return self._database.conn()

    def _db(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._database.transaction()

    # -- the scheduler's lease --------------------------------------------------------------

    def heartbeat(self, holder: str, ttl: float, registration: dict[str, Any] | None) -> dict[str, Any]:
        """Take or renew the lease if it is free, expired or ours.

        The holder's registration replaces the last one, and run requests waiting for it are
        claimed and returned. Returns `{"leader", "holder", "requests"}`.
        """
        if registration is not None:
            _check_registration(registration)
        now = self.clock()
        with self._db() as db:
            row = db.execute("SELECT * FROM lease WHERE id = 1").fetchone()
            if row is not None and row["holder"] != holder and row["expires"] >= now:
                return {"leader": False, "holder": row["holder"], "requests": []}
            if row is None or row["holder"] != holder:
                # A new leader: what the old one claimed but never started goes back in the
                # queue, and what it left running will never be finished.
                db.execute("UPDATE requests SET claimed = NULL WHERE run_id IS NULL")
                db.execute(
                    "UPDATE runs SET state = 'abandoned', finished = ? "
                    "WHERE state = 'running' AND trigger != 'manual'",
                    (now,),
                )
                acquired = now
            else:
                acquired = row["acquired"]
            db.execute(
                "INSERT OR REPLACE INTO lease (id, holder, expires, acquired, seen) VALUES (1, ?, ?, ?, ?)",
                (holder, now + ttl, acquired, now),
            )
            if registration is not None:
                db.execute(
                    "INSERT OR REPLACE INTO registration (id, holder, body, updated) VALUES (1, ?, ?, ?)",
                    (holder, json.dumps(registration), now),
                )
            pending = db.execute(
                "SELECT id, name, requested FROM requests WHERE claimed IS NULL ORDER BY id"
            ).fetchall()
            db.execute("UPDATE requests SET claimed = ? WHERE claimed IS NULL", (now,))
        if registration is not None:
            self._drop_unregistered_pins(registration)
        return {"leader": True, "holder": holder, "requests": [dict(r) for r in pending]}

    def release(self, holder: str) -> bool:
        """Give the lease up at once (a scheduler shutting down cleanly, leaving its runs)."""
        with self._db() as db:
            cur = db.execute("UPDATE lease SET expires = 0 WHERE id = 1 AND holder = ?", (holder,))
            db.execute(
                "UPDATE runs SET state = 'abandoned', finished = ? WHERE holder = ? AND state = 'running'",
                (self.clock(), holder),
            )
        return cur.rowcount > 0

    def _leader(self, db: sqlite3.Connection) -> sqlite3.Row | None:
        row: sqlite3.Row | None = db.execute("SELECT * FROM lease WHERE id = 1").fetchone()
        return row if row is not None and row["expires"] >= self.clock() else None

    # -- runs ---------------------------------------------------------------------------------

    def start_run(
        self,
        name: str,
        *,
        holder: str,
        trigger: str,
        scheduled: float | None = None,
        request: int | None = None,
    ) -> int:
        """Record that a run begins; raises NotLeader unless `holder` has the lease (manual
        runs excepted) and when this schedule already ran for `scheduled`."""
        if trigger not in TRIGGERS:
            raise NameInvalid(f"trigger must be one of {', '.join(TRIGGERS)}")
        now = self.clock()
        with self._db() as db:
            if trigger != "manual":
                lease = self._leader(db)
                if lease is None or lease["holder"] != holder:
                    raise NotLeader(f"{holder} does not hold the prewarm lease")
            try:
                cur = db.execute(
                    "INSERT INTO runs (name, trigger, scheduled, holder, started, state) "
                    "VALUES (?, ?, ?, ?, ?, 'running')",
                    (name, trigger, scheduled, holder, now),
                )
            except sqlite3.IntegrityError:
                raise NotLeader(f"schedule {name} already ran for {scheduled}") from None
            run_id = int(cur.lastrowid or 0)
            if request is not None:
                db.execute("UPDATE requests SET run_id = ? WHERE id = ?", (run_id, request))
        return run_id

    def finish_run(self, run_id: int, result: dict[str, Any]) -> None:
        """Store a run's result; a pinning run also settles which digests its images pin."""
        state = str(result.get("state") or "done")
        with self._db() as db:
            row = db.execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NameUnknown(f"no prewarm run {run_id}")
            db.execute(
                "UPDATE runs SET finished = ?, state = ?, result = ? WHERE id = ?",
                (self.clock(), state, json.dumps(result), run_id),
            )
            pruned = 0
            if result.get("pin") and not result.get("source_error"):
                images = [str(i.get("image")) for i in result.get("images") or []]
                marks = ",".join("?" * len(images)) or "''"
                pruned = db.execute(
                    f"DELETE FROM pins WHERE owner = ? AND image NOT IN ({marks})",
                    (f"schedule:{row['name']}", *images),
                ).rowcount
        if pruned or result.get("pin"):
            self.reconcile_pins()

    def runs(self, name: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent runs first, optionally of one schedule."""
        sql, args = "SELECT * FROM runs", list[Any]()
        if name is not None:
            sql, args = sql + " WHERE name = ?", [name]
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_run(r) for r in rows]

    # -- run requests ---------------------------------------------------------------------

    def request_run(self, name: str) -> int:
        """Queue a run of a registered schedule for the scheduler; a run already queued and
        not yet started is reused. Raises NameUnknown or SchedulerUnavailable."""
        with self._db() as db:
            if name not in _schedule_names(db):
                raise NameUnknown(f"no registered prewarm schedule {name!r}")
            if self._leader(db) is None:
                raise SchedulerUnavailable("no prewarm scheduler is connected to this cache")
            row = db.execute("SELECT id FROM requests WHERE name = ? AND run_id IS NULL", (name,)).fetchone()
            if row is not None:
                return int(row["id"])
            cur = db.execute("INSERT INTO requests (name, requested) VALUES (?, ?)", (name, self.clock()))
            return int(cur.lastrowid or 0)

    def request_status(self, request: int) -> dict[str, Any]:
        """`{"id", "name", "state": queued|claimed|running|<run state>, "run"}`."""
        row = self._conn().execute("SELECT * FROM requests WHERE id = ?", (request,)).fetchone()
        if row is None:
            raise NameUnknown(f"no prewarm run request {request}")
        out: dict[str, Any] = {"id": row["id"], "name": row["name"], "run": None}
        if row["run_id"] is None:
            out["state"] = "claimed" if row["claimed"] else "queued"
            return out
        run = self._conn().execute("SELECT * FROM runs WHERE id = ?", (row["run_id"],)).fetchone()
        out["run"] = _run(run)
        out["state"] = run["state"]
        return out

    # -- what GET /api/v1/prewarm shows ----------------------------------------------------

    def limits(self) -> dict[str, int]:
        """The budget the registered prewarm file asks for (defaults when none is)."""
        row = self._conn().execute("SELECT body FROM registration WHERE id = 1").fetchone()
        limits = dict(DEFAULT_LIMITS)
        if row is not None:
            limits.update(json.loads(row["body"]).get("limits") or {})
        return limits

    def snapshot(self) -> dict[str, Any]:
        """The scheduler, its schedules with next run and last result, limits, queued runs."""
        conn = self._conn()
        now = self.clock()
        lease = conn.execute("SELECT * FROM lease WHERE id = 1").fetchone()
        reg = conn.execute("SELECT * FROM registration WHERE id = 1").fetchone()
        body = json.loads(reg["body"]) if reg is not None else {}
        scheduler = None
        if lease is not None:
            scheduler = {
                "holder": lease["holder"], "alive": lease["expires"] >= now,
                "since": lease["acquired"], "last_seen": lease["seen"],
                "config": body.get("config"), "loaded_at": body.get("loaded_at"),
            }  # fmt: skip
        schedules = []
        for sched in body.get("schedules") or []:
            last = conn.execute(
                "SELECT * FROM runs WHERE name = ? ORDER BY id DESC LIMIT 1", (sched["name"],)
            ).fetchone()
            schedules.append({**sched, "last_run": _run(last) if last is not None else None})
        queued = conn.execute(
            "SELECT id, name, requested, claimed FROM requests WHERE run_id IS NULL ORDER BY id"
        ).fetchall()
        return {
            "scheduler": scheduler,
            "limits": {**DEFAULT_LIMITS, **(body.get("limits") or {})},
            "schedules": schedules,
            "requests": [dict(r) for r in queued],
        }

    # -- pins -------------------------------------------------------------------------------

    def record_pin(self, owner: str, image: str, digest: str) -> None:
        """`owner` (a schedule, or "api") holds `image` pinned at `digest`."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO pins (owner, image, digest) VALUES (?, ?, ?)",
                       (owner, image, digest))  # fmt: skip

    def drop_pins(self, image: str) -> None:
        """Forget every pin of an image (it was deleted by hand)."""
        with self._db() as db:
            db.execute("DELETE FROM pins WHERE image = ?", (image,))

    def reconcile_pins(self) -> tuple[int, int]:
        """Pin every stored blob some pin needs, unpin the rest; returns (pinned, unpinned)."""
        rows = self._conn().execute("SELECT DISTINCT digest FROM pins").fetchall()
        wanted: set[str] = set()
        for row in rows:
            wanted.update(self.store.closure(row["digest"]))
        to_pin, to_unpin = reconcile(wanted, self.store.pinned())
        self.store.set_pinned(to_unpin, False)
        self.store.set_pinned(to_pin, True)
        return len(to_pin), len(to_unpin)

    def _drop_unregistered_pins(self, registration: dict[str, Any]) -> None:
        keep = [f"schedule:{s['name']}" for s in registration.get("schedules") or [] if s.get("pin")]
        marks = ",".join("?" * len(keep)) or "''"
        with self._db() as db:
            gone = db.execute(
                f"DELETE FROM pins WHERE owner LIKE 'schedule:%' AND owner NOT IN ({marks})", keep
            ).rowcount
        if gone:
            self.reconcile_pins()


def _schedule_names(db: sqlite3.Connection) -> set[str]:
    row = db.execute("SELECT body FROM registration WHERE id = 1").fetchone()
    return {s["name"] for s in json.loads(row["body"]).get("schedules") or []} if row else set()


def _run(row: sqlite3.Row) -> dict[str, Any]:
    keys = ("id", "name", "trigger", "scheduled", "holder", "started", "finished", "state")
    out = {k: row[k] for k in keys}
    out["result"] = json.loads(row["result"]) if row["result"] else None
    return out


def _check_registration(body: dict[str, Any]) -> None:
    """A registration is `{"config", "loaded_at", "limits", "schedules": [{"name", ...}]}`."""
    schedules = body.get("schedules")
    if not isinstance(schedules, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in schedules
    ):
        raise NameInvalid('"schedules" must be a list of objects with a "name"')
    limits = body.get("limits") or {}
    if not isinstance(limits, dict) or not all(
        isinstance(limits.get(k, 0), int) and limits.get(k, 0) >= 0 for k in DEFAULT_LIMITS
    ):
        raise NameInvalid('"limits" must hold integers "concurrency" and "bandwidth" (bits/s)')
