"""What the eviction policy learned, kept in the index so that a restart keeps it.

The store builds a fresh policy (nic_cache/policy) for every eviction, in whichever worker
process evicts. `choose_victims` restores the state saved by the last eviction, loads the
stored blobs, replays the pull log since that eviction (each pull as `on_use` of the image
with every blob its manifest needs; policy/relearn.py), asks for victims and saves the state
back, with the last pull it saw. It runs under the store's eviction lock, so saves never
interleave. `predicted_prefetch` learns the same way and asks for a prefetch plan instead;
it only reads (no lock, nothing saved), so it never holds an eviction up.

One row per policy name in `policy_state`. Its size is bounded by the policy's own caps
(predictive: `max_images` images of at most `bins` counters each); a state over MAX_BYTES
is not saved (logged), and the previous one stays.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import StoreError
from .policy import Entry, Policy, Prefetch
from .policy.relearn import Use, learns_uses, relearn
from .sqlitedb import Database

log = logging.getLogger(__name__)
MAX_BYTES = 16 * 1024 * 1024  # predictive at its caps: 2048 images x (64 digests + 240 bins)

# the last pull fed to the policy is (pull_ts, pull_rowid) of `pulls`; (0, 0) before any
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS policy_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
    "pull_ts REAL NOT NULL, pull_rowid INTEGER NOT NULL)"
)
Mark = tuple[float, int]


def choose_victims(
    database: Database,
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
    mark = _learn(database, policy, entries, closure)
    victims = policy.victims(need, now, keep=keep)
    _save(database, policy.name, policy.state(), mark)
    return victims


def predicted_prefetch(
    database: Database,
    policy: Policy,
    entries: Iterable[Entry],
    closure: Callable[[str], list[str]],
    *,
    now: float,
    budget: int,
) -> list[Prefetch]:
    """What `policy`, fed as `choose_victims` feeds it, would prefetch now within `budget`
    bytes; saves nothing."""
    _learn(database, policy, entries, closure)
    return policy.prefetch_plan(now, budget)


def _learn(database: Database, policy: Policy, entries: Iterable[Entry],
           closure: Callable[[str], list[str]]) -> Mark:  # fmt: skip
    state, mark = _load(database, policy.name)
    rows = _pulls_since(database, mark) if learns_uses(policy) else _last_pull(database, mark)
    if rows:
        mark = (rows[-1]["ts"], rows[-1]["rowid"])
    problem = relearn(policy, state, entries, _uses(rows, closure))
    if problem:
        log.warning("eviction policy %s: %s", policy.name, problem)
    return mark


def _uses(rows: list[sqlite3.Row], closure: Callable[[str], list[str]]) -> Iterator[Use]:
    blobs: dict[str, tuple[str, ...]] = {}
    for row in rows:
        digest = row["digest"]
        if digest not in blobs:
            blobs[digest] = tuple(closure(digest))
        yield Use(row["ts"], row["image"], blobs[digest])


def _load(database: Database, name: str) -> tuple[dict[str, Any], Mark]:
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


_NEWER = "kind = 'pull' AND digest IS NOT NULL AND (ts > ? OR (ts = ? AND rowid > ?))"


def _pulls_since(database: Database, mark: Mark) -> list[sqlite3.Row]:
    ts, rowid = mark
    return _query(database, f"SELECT rowid, ts, image, digest FROM pulls WHERE {_NEWER} "
                            "ORDER BY ts, rowid", (ts, ts, rowid))  # fmt: skip


def _last_pull(database: Database, mark: Mark) -> list[sqlite3.Row]:
    ts, rowid = mark
    return _query(database, f"SELECT rowid, ts, image, digest FROM pulls WHERE {_NEWER} "
                            "ORDER BY ts DESC, rowid DESC LIMIT 1", (ts, ts, rowid))  # fmt: skip


def _save(database: Database, name: str, state: dict[str, Any], mark: Mark) -> None:
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


def _query(database: Database, sql: str, args: tuple[object, ...]) -> list[sqlite3.Row]:
    try:
        return database.conn().execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"index query failed: {exc}") from exc
