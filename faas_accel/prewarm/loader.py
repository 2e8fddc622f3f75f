"""Load prewarm.yml: parse it (spec.py), build its APScheduler triggers, check its stack files.

Everything that can be wrong with a prewarm file is found here, before a scheduler starts
or replaces its schedules, and reported as `file:line: reason`.
"""

from __future__ import annotations

import os
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .errors import PrewarmConfigError
from .spec import PrewarmSpec, Schedule, StackSource, parse_prewarm
from .stack import stack_images

# Intervals count from here, not from when a scheduler started, so every scheduler (and a
# restarted one) agrees on when an interval schedule is due.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Loaded:
    """A validated prewarm file and a trigger per schedule name."""

    spec: PrewarmSpec
    triggers: Mapping[str, Any]  # APScheduler BaseTrigger


def load_prewarm_file(path: str, environ: Mapping[str, str] | None = None) -> Loaded:
    """Read, parse and check a prewarm file; raises PrewarmConfigError."""
    env = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PrewarmConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    spec = parse_prewarm(text, env, source=path, base_dir=os.path.dirname(os.path.abspath(path)))
    triggers = {}
    for i, schedule in enumerate(spec.schedules):
        triggers[schedule.name] = build_trigger(schedule, spec.timezone, label=f"schedules[{i}]")
        if isinstance(schedule.source, StackSource):
            try:
                read_stack(schedule.source, env)
            except PrewarmConfigError as exc:
                where = f"{schedule.at('source')}: schedules[{i}].source.stack"
                raise PrewarmConfigError(f"{where}: {exc}") from exc
    return Loaded(spec, triggers)


def build_trigger(schedule: Schedule, default_timezone: str | None, *, label: str = "") -> Any:
    """The APScheduler trigger of a schedule; raises PrewarmConfigError at the cron's line."""
    name = schedule.timezone or default_timezone
    tz = zoneinfo.ZoneInfo(name) if name else None  # None: APScheduler uses local time
    jitter = schedule.jitter or None
    if schedule.cron is None:
        return IntervalTrigger(
            seconds=schedule.interval or 1, start_date=EPOCH, timezone=tz or UTC, jitter=jitter
        )
    c = schedule.cron
    try:
        return CronTrigger(
            minute=c.minute, hour=c.hour, day=c.day, month=c.month, day_of_week=c.day_of_week,
            timezone=tz, jitter=jitter,
        )  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise PrewarmConfigError(
            f"{schedule.at('cron')}: {label or schedule.name}.cron: {c.expr!r}: {exc}"
        ) from exc


def read_stack(source: StackSource, environ: Mapping[str, str]) -> list[str]:
    """The images of a stack file, read now; raises PrewarmConfigError."""
    try:
        with open(source.resolved, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise PrewarmConfigError(f"cannot read {source.resolved}: {exc.strerror}") from exc
    return stack_images(text, environ, source=source.resolved)
