"""What the eviction policy learned, kept in the index so that a restart keeps it.

The store builds a fresh policy (nic_cache/policy) for every eviction, in whichever worker
process evicts. `choose_victims` restores the state saved by the last eviction, loads the
stored blobs, replays the pull log since that eviction (each pull as `on_use` of the image
with every blob its manifest needs), asks for victims and saves the state back, with the
last pull it saw. It runs under the store's eviction lock, so saves never interleave.

One row per policy name in `policy_state`. Its size is bounded by the policy's own caps
(predictive: `max_images` images of at most `bins` counters each); a state over MAX_BYTES
is not saved (logged), and the previous one stays.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .policy import Entry, Policy
from .sqlitedb import Database

if TYPE_CHECKING:
    from .index import Index

log = logging.getLogger(__name__)
MAX_BYTES = 16 * 1024 * 1024  # predictive at its caps: 2048 images x (64 digests + 240 bins)

# the last pull fed to the policy is (pull_ts, pull_rowid) of `pulls`; (0, 0) before any
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS policy_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
    "pull_ts REAL NOT NULL, pull_rowid INTEGER NOT NULL)"
)


def choose_victims(
    database: Database | Index,
    policy: Policy,
    entries: Iterable[Entry],
    closure: Callable[[str], list[str]],
    *,
    need: int,
    now: float,
    keep: Iterable[str],
) -> list[str]:
    """Victims from `policy` fed with its saved state, `entries` (the stored blobs) and the
    pulls since its last save (`closure` gives a manifest's blobs); saves what it learned."""
    state, mark = _load(database, policy.name)
    if state:
        try:
            policy.restore(state)
        except (KeyError, TypeError, ValueError) as exc:  # a state from another version
            log.warning("eviction policy %s: saved state dropped: %s", policy.name, exc)
    policy.load(entries)
    learns = type(policy).on_use is not Policy.on_use
    blobs: dict[str, list[str]] = {}
    for row in _pulls_since(database, mark):
        mark = (row["ts"], row["rowid"])
        if learns:
            digest = row["digest"]
            if digest not in blobs:
                blobs[digest] = closure(digest)
            policy.on_use(row["image"], blobs[digest], row["ts"])
    victims = policy.victims(need, now, keep=keep)
    _save(database, policy.name, policy.state(), mark)
    return victims


def _load(database: Database | Index, name: str) -> tuple[dict[str, Any], tuple[float, int]]:
    _query(database, SCHEMA, ())
    rows = _query(database, "SELECT * FROM policy_state WHERE name = ?", (name,))
    if not rows:
        return {}, (0.0, 0)
    mark = (float(rows[0]["pull_ts"]), int(rows[0]["pull_rowid"]))
    try:
        state = json.loads(rows[0]["state"])
    except ValueError:
        log.warning("eviction policy %s: saved state unreadable, starting afresh", name)
        return {}, mark
    return (state if isinstance(state, dict) else {}), mark


def _pulls_since(database: Database | Index, mark: tuple[float, int]) -> list[sqlite3.Row]:
    ts, rowid = mark
    return _query(
        database,
        "SELECT rowid, ts, image, digest FROM pulls WHERE kind = 'pull' AND digest IS NOT NULL "
        "AND (ts > ? OR (ts = ? AND rowid > ?)) ORDER BY ts, rowid",
        (ts, ts, rowid),
    )


def _save(database: Database | Index, name: str, state: dict[str, Any], mark: tuple[float, int]) -> None:
    text = json.dumps(state, separators=(",", ":"))
    if len(text) > MAX_BYTES:
        log.warning("eviction policy %s: state of %d bytes not saved (limit %d)", name, len(text), MAX_BYTES)
        return
    with database.transaction() as db:
        db.execute(
            "INSERT INTO policy_state VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "state = excluded.state, pull_ts = excluded.pull_ts, pull_rowid = excluded.pull_rowid",
            (name, text, mark[0], mark[1]),
        )


def _query(database: Database | Index, sql: str, args: tuple[object, ...]) -> list[sqlite3.Row]:
    try:
        return database.conn().execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"index query failed: {exc}") from exc
