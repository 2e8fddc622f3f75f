"""The prewarm scheduler loop: APScheduler triggers, the cache's lease, SIGHUP reloads.

`faas-accel prewarm run` runs one Scheduler. Every `beat` seconds it heartbeats the cache:
that takes or renews the cache's lease (so of all the schedulers pointed at one cache,
exactly one runs schedules; the others stand by and take over when its lease expires),
registers the schedules with their next run, and collects runs asked for through the
admin API. `tick(now)` fires what is due: a trigger's fire times are computed by
APScheduler for the `now` it is given, so tests drive the loop with any clock.

Each due time is a *slot* (the trigger's time without jitter) plus APScheduler's jitter;
runs are recorded under their slot, which the cache accepts once per schedule. A slot that
comes while the previous run of its schedule is still going is skipped, and slots missed
while the loop was not running collapse into one run, under the last of them (APScheduler's
coalescing).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..cacheapi import CacheAPI, CacheAPIError
from .errors import PrewarmConfigError
from .loader import Loaded, load_prewarm_file
from .runner import run_schedule
from .spec import Schedule

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """A schedule with its triggers and what the loop knows about it."""

    schedule: Schedule
    trigger: Any  # APScheduler trigger, jitter included
    plain: Any  # the same trigger without jitter: gives the slots
    default_tz: str | None
    slot: datetime | None = None
    due: datetime | None = None
    running: threading.Thread | None = None
    queued: list[int] = field(default_factory=list)  # run requests waiting for `running`

    def advance(self, prev: datetime | None, now: datetime) -> None:
        """The first slot after `prev` (after `now` if None), and when it is due."""
        self.slot = self.plain.get_next_fire_time(prev, now)
        self.due = self.trigger.get_next_fire_time(prev, now) if self.slot is not None else None

    def busy(self) -> bool:
        return self.running is not None and self.running.is_alive()


class Scheduler:
    """Runs a prewarm file's schedules against one cache; see the module docstring."""

    def __init__(
        self,
        loaded: Loaded,
        api: CacheAPI,
        *,
        config_path: str,
        environ: Mapping[str, str] | None = None,
        holder: str | None = None,
        lease_ttl: float = 15.0,
        beat: float = 1.0,
        clock: Callable[[], float] = time.time,
        run: Callable[..., dict[str, Any]] = run_schedule,
    ) -> None:
        self.api = api
        self.config_path = os.path.abspath(config_path)
        self.environ = os.environ if environ is None else environ
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.lease_ttl = lease_ttl
        self.beat = min(beat, lease_ttl / 3)
        self.clock = clock
        self.run = run
        self.leader = False
        self._lease_until = 0.0
        self._reachable = True  # whether the last heartbeat got an answer (for the log)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self.entries: dict[str, Entry] = {}
        self.loaded = loaded
        self.loaded_at = clock()
        self._apply(loaded)

    # -- schedules ------------------------------------------------------------------------

    def _apply(self, loaded: Loaded) -> None:
        now = _dt(self.clock())
        entries = {}
        for schedule in loaded.spec.schedules:
            old = self.entries.get(schedule.name)
            trigger = loaded.triggers[schedule.name]
            if old is not None and (old.schedule, old.default_tz) == (schedule, loaded.spec.timezone):
                entries[schedule.name] = old  # unchanged: keep its next run and its running run
                continue
            plain = copy.copy(trigger)
            plain.jitter = None
            entry = Entry(schedule, trigger, plain, loaded.spec.timezone)
            if old is not None:
                entry.running, entry.queued = old.running, old.queued
            entry.advance(None, now)
            entries[schedule.name] = entry
        self.entries = entries
        self.loaded = loaded

    def reload(self) -> bool:
        """Re-read the prewarm file; a bad one is logged and the current schedules kept."""
        try:
            loaded = load_prewarm_file(self.config_path, self.environ)
        except PrewarmConfigError as exc:
            log.error("reload refused, keeping the %d current schedules: %s", len(self.entries), exc)
            return False
        self._apply(loaded)
        self.loaded_at = self.clock()
        log.info("reloaded %s: %d schedules", self.config_path, len(self.entries))
        return True

    def registration(self) -> dict[str, Any]:
        """What the cache shows under GET /api/v1/prewarm."""
        spec = self.loaded.spec
        schedules = []
        for e in self.entries.values():
            s = e.schedule
            trigger = s.trigger_text
            if s.cron is not None and not s.timezone:
                trigger += f" ({spec.timezone or 'local time'})"
            schedules.append({
                "name": s.name, "trigger": trigger, "source": s.source_dict(), "pin": s.pin,
                "platforms": list(s.platforms) if s.platforms else None,
                "next_run": e.due.timestamp() if e.due else None, "running": e.busy(),
            })  # fmt: skip
        return {
            "holder": self.holder,
            "config": self.config_path,
            "loaded_at": self.loaded_at,
            "limits": {"concurrency": spec.limits.concurrency, "bandwidth": spec.limits.bandwidth},
            "schedules": schedules,
        }

    # -- the lease --------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Renew (or try to take) the lease, register, and queue the runs asked for."""
        sent = self.clock()
        try:
            answer = self.api.heartbeat(self.holder, self.lease_ttl, self.registration())
        except CacheAPIError as exc:
            if self._reachable:
                log.warning("heartbeat failed (retrying every %g s): %s", self.beat, exc)
                self._reachable = False
            if self.leader and self.clock() >= self._lease_until:
                log.warning("lost the prewarm lease of %s", self.api.url)
                self.leader = False
            return
        if not self._reachable:
            log.info("heartbeats reach %s again", self.api.url)
            self._reachable = True
        leader = bool(answer.get("leader"))
        if leader != self.leader:
            log.info("%s the prewarm lease of %s%s", "holding" if leader else "standing by: not holding",
                     self.api.url, "" if leader else f" (held by {answer.get('holder')})")  # fmt: skip
        self.leader = leader
        self._lease_until = sent + self.lease_ttl - self.beat
        for req in answer.get("requests") or ():
            entry = self.entries.get(str(req.get("name")))
            if entry is None:
                log.warning("run request %s names no schedule here: %s", req.get("id"), req.get("name"))
            else:
                entry.queued.append(int(req["id"]))

    def is_leader(self, now: float) -> bool:
        return self.leader and now < self._lease_until

    # -- firing -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[str]:
        """Start what is due at `now` (if leader); returns the names started."""
        at = _dt(now)
        started = []
        leader = self.is_leader(now)
        for name, e in self.entries.items():
            if e.due is not None and e.due <= at:
                slot = e.slot
                e.advance(slot, at)
                while e.due is not None and e.due <= at:  # missed slots collapse into the last
                    slot = e.slot
                    e.advance(slot, at)
                if not leader:
                    continue
                if e.busy():
                    log.warning("prewarm %s: still running, skipping the run due at %s", name, slot)
                    continue
                e.running = self._start(e.schedule, "schedule", slot.timestamp() if slot else None, None)
                started.append(name)
            elif leader and e.queued and not e.busy():
                e.running = self._start(e.schedule, "request", None, e.queued.pop(0))
                started.append(name)
        return started

    def _start(
        self, schedule: Schedule, trigger: str, scheduled: float | None, request: int | None
    ) -> threading.Thread:
        # Daemon threads: a stopping scheduler does not wait for runs; the cache marks the
        # runs it left behind abandoned when the next scheduler takes the lease.
        thread = threading.Thread(
            target=self._run, args=(schedule, trigger, scheduled, request),
            name=f"prewarm-{schedule.name}", daemon=True,
        )  # fmt: skip
        thread.start()
        return thread

    def _run(self, schedule: Schedule, trigger: str, scheduled: float | None, request: int | None) -> None:
        try:
            result = self.run(
                schedule, self.api, environ=self.environ, holder=self.holder, trigger=trigger,
                scheduled=scheduled, request=request, limits=self.loaded.spec.limits,
            )  # fmt: skip
        except CacheAPIError as exc:
            level = logging.INFO if exc.code == "NOT_LEADER" else logging.ERROR
            log.log(level, "prewarm %s: not started: %s", schedule.name, exc)
            return
        except Exception:  # a run thread must report, never die silently
            log.exception("prewarm %s crashed", schedule.name)
            return
        log.info(
            "prewarm %s (%s): %s, %d/%d images, %d blobs and %d bytes fetched in %.1f s%s",
            schedule.name, trigger, result["state"], result["images_done"], result["images_total"],
            result["blobs_fetched"], result["bytes_fetched"], result["seconds"],
            "".join(f"\n  error: {e}" for e in result["errors"]),
        )  # fmt: skip

    def wait_runs(self, timeout: float | None = None) -> None:
        """Wait for the runs in progress (tests)."""
        for e in self.entries.values():
            if e.running is not None:
                e.running.join(timeout)

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> None:
        """Heartbeat and tick until `stop()`; then give the lease up."""
        next_beat = 0.0
        while not self._stop.is_set():
            if self._reload.is_set():
                self._reload.clear()
                if self.reload():
                    next_beat = 0.0
            now = self.clock()
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + self.beat
            self.tick(self.clock())
            dues = [e.due.timestamp() for e in self.entries.values() if e.due is not None]
            nearest = min([next_beat, *dues])
            self._wake.wait(max(0.0, min(nearest - self.clock(), self.beat)))
            self._wake.clear()
        if self.leader:
            try:
                self.api.release(self.holder)
            except CacheAPIError as exc:
                log.warning("could not release the prewarm lease: %s", exc)

    def stop(self) -> None:
        """Make `serve` return (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """Make `serve` re-read the prewarm file (safe from a signal handler)."""
        self._reload.set()
        self._wake.set()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
