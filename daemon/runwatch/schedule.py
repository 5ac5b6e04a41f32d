"""Crontab schedules for APScheduler 3, with crontab's weekdays."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from apscheduler.triggers.cron import CronTrigger

_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expr: str, timezone: Any = None) -> CronTrigger:
    """A crontab schedule with crontab's weekdays. APScheduler 3 numbers them from Monday
    (``0`` = Monday), crontab from Sunday (``0``/``7`` = Sunday): numbers in the day-of-week
    field are turned into names first, so ``0 8 * * 1-5`` means Monday to Friday."""
    minute, hour, day, month, dow = expr.split()
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=_weekdays(dow), timezone=timezone or UTC)


def _weekdays(field: str) -> str:
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            low, high = 0, 6
        else:
            ends = [_day(x) for x in span.split("-")]
            low, high = ends[0], ends[-1]
            if len(ends) == 2 and high < low:  # e.g. 5-0 (Fri to Sun)
                high += 7
            if step and len(ends) == 1:
                high = 6
        days.update(d % 7 for d in range(low, high + 1, int(step) if step else 1))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def _day(text: str) -> int:
    text = text.lower()
    return _CRON_DAYS.index(text[:3]) if not text.isdigit() else int(text) % 7
