"""Pure parsing of crontab expressions into the fields of APScheduler's CronTrigger.

Five crontab fields, or a macro like `@daily`. APScheduler 3 numbers weekdays from
Monday = 0 where crontab has Sunday = 0 (or 7), so the weekday field is rewritten to day
names, which both read the same way. Restricting both the day of month and the weekday is
refused: cron runs when either matches, APScheduler only when both do.
"""

from __future__ import annotations

from dataclasses import dataclass

_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}  # fmt: skip
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, kw_only=True)
class Cron:
    """A crontab expression as written, and the fields APScheduler's CronTrigger takes."""

    expr: str
    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str  # day names or "*": never APScheduler's Monday-based numbers


def parse_cron(expr: str) -> Cron:
    """Five crontab fields (or a macro like @daily) for APScheduler; raises ValueError."""
    text = _MACROS.get(expr.strip().lower(), expr.strip())
    fields_ = text.split()
    if len(fields_) != 5:
        raise ValueError(f"need 5 fields (minute hour day month weekday), got {len(fields_)} in {expr!r}")
    minute, hour, day, month, weekday = fields_
    dow = crontab_weekdays(weekday)
    if day != "*" and dow != "*":
        raise ValueError(
            "restrict the day of month or the weekday, not both (cron runs when either "
            "matches, APScheduler only when both do)"
        )
    return Cron(expr=expr, minute=minute, hour=hour, day=day, month=month, day_of_week=dow)


def crontab_weekdays(text: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday, names, ranges, steps) as day names or `*`."""
    days: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) < 1):
            raise ValueError(f"bad step in weekday field {text!r}")
        step = int(step_text) if slash else 1
        if span == "*":
            first, last = 0, 7
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = _weekday(a, text), _weekday(b, text)
            if first > last:
                raise ValueError(f"weekday range {span!r} runs backwards in {text!r}")
        else:
            first = _weekday(span, text)
            last = 7 if slash else first
        days.update(d % 7 for d in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def _weekday(token: str, text: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token.lower() in _WEEKDAYS:
        return _WEEKDAYS.index(token.lower())
    raise ValueError(f"bad weekday {token!r} in {text!r} (0-7 or sun..sat)")
