"""Cron expressions: validation and next fire time in a time zone, DST handled.

Expressions have 5 fields, or 6 with seconds last (croniter's and procrastinate's
convention). They are read in a wall-clock time zone; on DST days:

* a local time that does not exist (spring forward) fires once, at the first valid
  instant after it (the transition itself), and several such times collapse to one run;
* a local time that occurs twice (fall back) fires once, at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache

from croniter import CroniterBadDateError, CroniterError, croniter
from django.core.exceptions import ValidationError

UTC = dt.UTC
#: Enough candidates to step over any DST oddity (a per-second cron skips up to 3,600 in
#: a repeated hour); a valid expression fires long before.
_MAX_CANDIDATES = 10_000


def validate_cron(expression: str) -> None:
    """Raise ValidationError with a message that says what is wrong and what is expected."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValidationError(
            "Enter a cron expression such as '0 * * * *' (every hour).", code="invalid_cron"
        )
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValidationError(
            "'%(cron)s' has %(n)d fields; a cron expression has 5 (minute hour day-of-month "
            "month day-of-week) or 6 (the same, then seconds).",
            code="invalid_cron",
            params={"cron": expression, "n": len(fields)},
        )
    try:
        croniter(expression)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValidationError(
            "'%(cron)s' is not a valid cron expression (%(error)s). Fields are minute hour "
            "day-of-month month day-of-week [second], e.g. '*/15 9-17 * * 1-5'.",
            code="invalid_cron",
            params={"cron": expression, "error": str(exc).split("] ")[-1]},
        ) from None
    try:
        croniter(expression, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        raise ValidationError(
            "'%(cron)s' never fires (no date matches it, e.g. 31 February).",
            code="never_fires",
            params={"cron": expression},
        ) from None


@lru_cache(maxsize=256)
def get_zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _resolve(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The instant a naive local wall time stands for: first occurrence, or gap end."""
    first = wall.replace(tzinfo=zone, fold=0)
    first_utc = first.astimezone(UTC)
    if first_utc.astimezone(zone).replace(tzinfo=None) == wall:
        return first_utc
    # ``wall`` falls in a DST gap. fold=1 reads it with the offset after the jump, which
    # lands before the gap; fold=0 lands after it. The transition lies between: find the
    # first instant whose wall time is at or past ``wall``.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first_utc
    if low > high:
        low, high = high, low
    while high - low > dt.timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


@lru_cache(maxsize=65536)
def next_fire(expression: str, after: dt.datetime, zone_name: str) -> dt.datetime:
    """The first instant strictly after ``after`` at which ``expression`` fires (UTC).

    Cached: in one scheduler tick many Tasks share an expression, a zone and a tick.
    """
    zone = get_zone(zone_name)
    # Candidates after ``after``'s wall time cover every later instant. Inside a repeated
    # hour, those whose first occurrence has already passed are skipped by the loop.
    candidates = croniter(expression, after.astimezone(zone).replace(tzinfo=None))
    for _ in range(_MAX_CANDIDATES):
        instant = _resolve(candidates.get_next(dt.datetime), zone)
        if instant > after:
            return instant
    raise ValidationError(  # pragma: no cover - validate_cron rejects such expressions
        "'%(cron)s' does not fire after %(after)s.",
        params={"cron": expression, "after": after.isoformat()},
    )


@lru_cache(maxsize=65536)
def prev_fire(expression: str, at: dt.datetime, zone_name: str) -> dt.datetime:
    """The latest instant at or before ``at`` at which ``expression`` fires (UTC)."""
    zone = get_zone(zone_name)
    local = at.astimezone(zone)
    # In the second pass of a repeated hour, fires whose wall time is later than ``at``'s
    # happened (first occurrence) before ``at``: start as late as the clock went back.
    shift = local.replace(fold=0).utcoffset() - local.utcoffset() if local.fold else dt.timedelta(0)
    candidates = croniter(expression, local.replace(tzinfo=None) + shift + dt.timedelta(seconds=1))
    for _ in range(_MAX_CANDIDATES):
        instant = _resolve(candidates.get_prev(dt.datetime), zone)
        if instant <= at:
            return instant
    raise ValidationError(  # pragma: no cover - validate_cron rejects such expressions
        "'%(cron)s' does not fire before %(at)s.",
        params={"cron": expression, "at": at.isoformat()},
    )


def fires_between(
    expression: str, start: dt.datetime, end: dt.datetime, zone_name: str, limit: int
) -> tuple[list[dt.datetime], bool]:
    """Fire instants in [start, end], at most ``limit``; the flag says whether more exist."""
    fires: list[dt.datetime] = []
    instant = next_fire(expression, start - dt.timedelta(microseconds=1), zone_name)
    while instant <= end:
        if len(fires) == limit:
            return fires, True
        fires.append(instant)
        instant = next_fire(expression, instant, zone_name)
    return fires, False


def next_fires(
    expression: str, after: dt.datetime, zone_name: str, count: int
) -> list[dt.datetime]:
    """The next ``count`` fire instants after ``after`` (UTC)."""
    result = []
    for _ in range(count):
        after = next_fire(expression, after, zone_name)
        result.append(after)
    return result


def period_to_cron(seconds: int) -> str:
    """The procrastinate periodic cron for a scheduler period given in seconds."""
    if 0 < seconds < 60 and 60 % seconds == 0:
        return "* * * * *" if seconds == 60 else f"* * * * * */{seconds}"
    if seconds >= 60 and seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        minutes = seconds // 60
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    raise ValueError(
        f"SCHEDULER_PERIOD={seconds} is not supported: use a divisor of 60 seconds "
        "(1, 2, 5, 10, 15, 20, 30) or a whole number of minutes dividing an hour "
        "(60, 120, 300, ...)."
    )
