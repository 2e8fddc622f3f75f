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

Cost. Reading, rebuilding and writing that state at every eviction took over a second at
the caps (a 25 MB JSON: 0.2 s to parse, 0.35 s to restore, 0.6 s to write back). A policy
that learns only from image uses (predictive) is a function of the pull log, so each worker
keeps the policy it used last (`_live`) and brings it up to date by replaying only the pulls
since, whatever other workers decided meanwhile; its state is written at most every
SAVE_EVERY seconds per worker (for restarts: the saved mark says which pulls to replay).
Other policies learn from the store's content, which any worker changes: they restore and
save as before (their states are small).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .policy import Entry, Policy, Prefetch
from .policy.relearn import Use, learns_uses, relearn
from .sqlitedb import Database

if TYPE_CHECKING:
    from .index import Index

log = logging.getLogger(__name__)
# predictive at its caps (2048 images x (64 digests + 240 bins), every digest sized) is 25 MB
MAX_BYTES = 32 * 1024 * 1024
SAVE_EVERY = 30.0  # seconds between two saves of a use-learned state by one worker

# the last pull fed to the policy is (pull_ts, pull_rowid) of `pulls`; (0, 0) before any
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS policy_state (name TEXT PRIMARY KEY, state TEXT NOT NULL, "
    "pull_ts REAL NOT NULL, pull_rowid INTEGER NOT NULL)"
)
Mark = tuple[float, int]
Slot = tuple[int, str, str]  # (process, index path, policy name)

_live: dict[Slot, tuple[Policy, Mark]] = {}  # the policy each worker used last, and its mark
_saved: dict[Slot, float] = {}  # when each worker last saved (the store's clock)
_guard = threading.Lock()


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
    mark = _learn(database, policy, entries, closure)
    victims = policy.victims(need, now, keep=keep)
    slot = _slot(database, policy)
    if not learns_uses(policy) or slot not in _saved or now - _saved[slot] >= SAVE_EVERY:
        _save(database, policy.name, policy.state(), mark)
        _saved[slot] = now
    _keep_live(database, policy, mark)
    return victims


def predicted_prefetch(
    database: Database | Index,
    policy: Policy,
    entries: Iterable[Entry],
    closure: Callable[[str], list[str]],
    *,
    now: float,
    budget: int,
) -> list[Prefetch]:
    """What `policy`, fed as `choose_victims` feeds it, would prefetch now within `budget`
    bytes; saves nothing."""
    mark = _learn(database, policy, entries, closure)
    plan = policy.prefetch_plan(now, budget)
    _keep_live(database, policy, mark)
    return plan


def forget_live() -> None:
    """Drop every policy this process keeps live (as a restarted process starts)."""
    with _guard:
        _live.clear()
        _saved.clear()


def _slot(database: Database | Index, policy: Policy) -> Slot:
    return (os.getpid(), database.path, policy.name)


def _keep_live(database: Database | Index, policy: Policy, mark: Mark) -> None:
    if learns_uses(policy):
        with _guard:
            _live[_slot(database, policy)] = (policy, mark)


def _learn(database: Database | Index, policy: Policy, entries: Iterable[Entry],
           closure: Callable[[str], list[str]]) -> Mark:  # fmt: skip
    with _guard:  # taken out while in use: two threads of a worker never share one
        warm = _live.pop(_slot(database, policy), None) if learns_uses(policy) else None
    if warm is not None and policy.adopt(warm[0]):
        state: dict[str, Any] = {}
        mark = warm[1]
    else:
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


def _load(database: Database | Index, name: str) -> tuple[dict[str, Any], Mark]:
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


def _pulls_since(database: Database | Index, mark: Mark) -> list[sqlite3.Row]:
    ts, rowid = mark
    return _query(database, f"SELECT rowid, ts, image, digest FROM pulls WHERE {_NEWER} "
                            "ORDER BY ts, rowid", (ts, ts, rowid))  # fmt: skip


def _last_pull(database: Database | Index, mark: Mark) -> list[sqlite3.Row]:
    ts, rowid = mark
    return _query(database, f"SELECT rowid, ts, image, digest FROM pulls WHERE {_NEWER} "
                            "ORDER BY ts DESC, rowid DESC LIMIT 1", (ts, ts, rowid))  # fmt: skip


def _save(database: Database | Index, name: str, state: dict[str, Any], mark: Mark) -> None:
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
