"""Cron expressions: validation and next fire time in a time zone, DST handled.

Expressions have 5 fields, or 6 with seconds last (croniter's and procrastinate's
convention): ``minute hour day-of-month month day-of-week [second]``. Each field is a
comma-separated list of ``*``, ``N``, ``N-M``, ``*/S``, ``N-M/S`` or ``N/S`` (N, then
every S-th value up to the field's end); month and day-of-week also take names
(``jan``-``dec``, ``sun``-``sat``, any case), day-of-week 0 and 7 are both Sunday.
Read like cron (Vixie cron's crontab(5)):

* ``N-N`` is the single value N (and ``N-N/S`` too);
* a range may not go backwards (``5-3``), except a day-of-week range ending on Sunday
  (``fri-sun``, ``5-0``), which ends on day 7;
* when day-of-month and day-of-week are both restricted (neither starts with ``*``),
  a day matching either fires; otherwise a day must match both;
* the shorthands ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and
  ``@yearly`` (``@annually``) stand for their 5-field forms; ``@reboot`` is refused.

croniter extras that it computes correctly are accepted: ``L`` (last day of the month)
in day-of-month, ``D#N`` (N-th weekday D of the month, N 1-5) and ``LD`` (last weekday D
of the month) in day-of-week, with ``*`` as day-of-month. ``W``, ``?`` and hashed
``H``/``R`` values are refused with a message. Every expression is checked and
normalised (:func:`normalize`) before croniter sees it; the text a user wrote is what
gets stored and shown.

Expressions are read in a wall-clock time zone; on DST days:

* a local time that does not exist (spring forward) fires once, at the first valid
  instant after it (the transition itself), and several such times collapse to one run;
* a local time that occurs twice (fall back) fires once, at its first occurrence.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import zoneinfo
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

from croniter import CroniterBadDateError, CroniterError, croniter
from django.core.exceptions import ValidationError

UTC = dt.UTC
#: Enough candidates to step over any DST oddity (a per-second cron skips up to 3,600 in
#: a repeated hour); a valid expression fires long before.
_MAX_CANDIDATES = 10_000

FIELD_ORDER = "minute hour day-of-month month day-of-week [second]"
EXAMPLE = "'*/15 9-17 * * 1-5'"

#: The shorthands croniter knows, as the 5-field expressions they stand for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: Fields are separated by ASCII blanks only, as croniter does (a no-break space is not
#: a separator, so splitting on it would check another expression than croniter reads).
_FIELD_RE = re.compile(r"[^ \t\n\r\f\v]+")
_DIGITS_RE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)
    names_hint: str = ""

    @property
    def size(self) -> int:
        return self.high - self.low + 1


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, {m: i for i, m in enumerate(_MONTHS, 1)}, "jan-dec or 1-12"),
    _Field("day-of-week", 0, 7, {d: i for i, d in enumerate(_DAYS)}, "mon-sun or 0-7"),
    _Field("second", 0, 59),
)
_DOM = 2  # day-of-month: day-of-week extras need it to be *
_SECONDS_LAST = (
    " (a 6th field is the seconds, written last: minute hour day-of-month month day-of-week second)"
)


class _FieldError(Exception):
    """One problem in one field, phrased for people."""


def _invalid(expression: str, problems: list[str]) -> ValidationError:
    return ValidationError(
        "'%(cron)s' is not a valid cron expression: %(problems)s. Fields are %(order)s, "
        "e.g. %(example)s.",
        code="invalid_cron",
        params={
            "cron": expression,
            "problems": "; ".join(problems),
            "order": FIELD_ORDER,
            "example": EXAMPLE,
        },
    )


def _value(spec: _Field, text: str) -> int:
    """A number or name of ``spec``'s field, range-checked."""
    if _DIGITS_RE.fullmatch(text):
        # Bounded before int(): a thousand-digit number is out of range, not a crash.
        number = int(text) if len(text) <= 6 else spec.high + 1
        if not spec.low <= number <= spec.high:
            raise _FieldError(f"{text} is out of range {spec.low}-{spec.high}")
        return number
    if text.lower() in spec.names:
        return spec.names[text.lower()]
    if any(char.isspace() for char in text):
        raise _FieldError(f"'{text}' contains a special space; separate fields with plain spaces")
    if spec.name == "month":
        raise _FieldError(f"'{text}' is not a month name ({spec.names_hint})")
    if spec.name == "day-of-week":
        raise _FieldError(f"'{text}' is not a day name ({spec.names_hint})")
    raise _FieldError(f"'{text}' is not a number ({spec.low}-{spec.high})")


def _step(spec: _Field, item: str, text: str) -> int:
    if not _DIGITS_RE.fullmatch(text) or not 1 <= int(text[:6]) <= spec.size or len(text) > 6:
        raise _FieldError(f"step '{text}' in '{item}' must be a number from 1 to {spec.size}")
    return int(text)


def _special(spec: _Field, item: str) -> str | None:
    """croniter's extras in ``item``: their normal form, None if there are none."""
    lowered = item.lower()
    if "?" in item:
        raise _FieldError(f"'{item}': '?' is Quartz syntax, not cron; use '*'{_SECONDS_LAST}")
    if re.fullmatch(r"[hr](\(.*\))?(/.*)?", lowered):
        raise _FieldError(f"'{item}' (a hashed or random value) is not supported; write a number")
    if spec.name == "day-of-month":
        if lowered == "l":
            return "L"
        if re.fullmatch(r"[0-9]*w[0-9]*|lw", lowered):
            raise _FieldError(
                f"'{item}' (nearest weekday) is not supported; use a day of the month"
            )
        if "l" in re.split(r"[-/]", lowered):
            raise _FieldError(
                f"'{item}': L (the last day of the month) is accepted on its own only, "
                "e.g. 'L' or '1,L'"
            )
    if spec.name == "day-of-week":
        if "#" in item:
            day, _, nth = item.partition("#")
            if not re.fullmatch(r"[1-5]", nth):
                raise _FieldError(
                    f"'{item}': the week after '#' must be 1-5 (e.g. 'fri#2', the 2nd Friday)"
                )
            return f"{_value(spec, day)}#{nth}"
        if lowered.startswith("l") and len(lowered) > 1:
            return f"L{_value(spec, item[1:])}"
        if lowered.endswith("l") and lowered[:-1] not in spec.names:
            raise _FieldError(
                f"'{item}': write the last weekday of a month as L then the day, "
                "e.g. 'L5' or 'Lfri' for the last Friday"
            )
    if spec.name not in ("day-of-month", "day-of-week") and lowered == "l":
        raise _FieldError("'L' (last) is accepted in day-of-month and day-of-week only")
    return None


def _item(spec: _Field, item: str) -> tuple[str, bool]:
    """One list item in normal form, and whether it is an n-th/last weekday."""
    special = _special(spec, item)
    if special is not None:
        return special, spec.name == "day-of-week"
    base, slash, step_text = item.partition("/")
    step = _step(spec, item, step_text) if slash else None
    suffix = f"/{step}" if step is not None else ""
    if base == "*":
        return f"*{suffix}", False
    if "-" in base.lstrip("-"):
        low_text, _, high_text = base.partition("-")
        low, high = _value(spec, low_text), _value(spec, high_text)
        if spec.name == "day-of-week" and high == 0 and low > 0:
            high = 7  # fri-sun: Sunday closes the week
        if low == high:
            return str(low), False  # N-N is N, whatever the step
        if low > high:
            raise _FieldError(
                f"range {base} goes backwards; to wrap around, write "
                f"{low}-{spec.high},{spec.low}-{high}"
            )
        return f"{low}-{high}{suffix}", False
    if base.startswith("-"):
        raise _FieldError(f"'{base}' is negative; values start at {spec.low}")
    value = _value(spec, base)
    if step is None or value == spec.high:
        return str(value), False
    # N/S runs to the field's end, which for day-of-week is 7 (croniter stops at 6).
    return f"{value}-{spec.high}/{step}", False


def _normal_field(spec: _Field, text: str, day_of_month: str) -> str:
    if "" in text.split(","):
        raise _FieldError(f"'{text}' has an empty item; separate values with single commas")
    items = [_item(spec, part) for part in text.split(",")]
    nth = [text for text, is_nth in items if is_nth]
    if nth and len(nth) != len(items):
        raise _FieldError(
            f"'{text}' mixes plain days with n-th or last weekdays ({', '.join(nth)}); "
            "use one kind per expression"
        )
    if nth and day_of_month != "*":
        raise _FieldError(f"'{text}' (n-th or last weekday) needs '*' as day-of-month")
    first, *rest = (item for item, _ in items)
    if first == "*":
        return "*"  # every value; and unrestricted, as cron reads a field starting with '*'
    # Whether a day field counts as restricted, cron decides from its first character;
    # croniter looks for a '*' anywhere. Stars after the first item are spelled out.
    whole = f"{spec.low}-{spec.high}"
    return ",".join([first, *(whole + item[1:] if item.startswith("*") else item for item in rest)])


@lru_cache(maxsize=4096)
def normalize(expression: str) -> str:
    """The expression as croniter must be given it to read it like cron.

    Raises ValidationError naming each field and token at fault. The result has
    numbers instead of names, ``N`` instead of ``N-N`` (croniter reads an equal-ended
    range as the whole field), ``N/S`` as ``N-end/S``, day-of-week ranges ending on
    Sunday as ``...-7``, and a shorthand replaced by its 5-field form.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValidationError(
            "Enter a cron expression such as '0 * * * *' (every hour).", code="invalid_cron"
        )
    text = expression.strip()
    if text.startswith("@"):
        return _alias(text)
    fields = _FIELD_RE.findall(text)
    if len(fields) not in (5, 6):
        raise ValidationError(
            "'%(cron)s' has %(n)d fields; a cron expression has 5 (minute hour day-of-month "
            "month day-of-week) or 6 (the same, then seconds).",
            code="invalid_cron",
            params={"cron": expression, "n": len(fields)},
        )
    normal, problems = [], []
    for spec, value in zip(_FIELDS, fields, strict=False):
        try:
            normal.append(_normal_field(spec, value, fields[_DOM]))
        except _FieldError as exc:
            hint = _SECONDS_LAST if spec.name == "second" and "?" not in value else ""
            problems.append(f"{spec.name}: {exc}{hint}")
    if problems:
        raise _invalid(expression, problems)
    return " ".join(normal)


def _alias(text: str) -> str:
    lowered = text.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    if lowered == "@reboot":
        raise ValidationError(
            "'@reboot' runs a job when the cron daemon starts; a scheduled task has no "
            "such moment. Give times instead, e.g. '@hourly' or '0 * * * *'.",
            code="invalid_cron",
        )
    raise ValidationError(
        "'%(cron)s' is not a known shorthand; use %(known)s, or 5 fields (%(order)s).",
        code="invalid_cron",
        params={"cron": text, "known": ", ".join(ALIASES), "order": FIELD_ORDER},
    )


def cron_iter(expression: str, start: dt.datetime) -> croniter:
    """A croniter over ``expression`` from ``start``, read like cron (see the module doc).

    Everything that hands an expression to croniter goes through here, so that the
    normalisation and the day-of-month/day-of-week rule apply everywhere.
    """
    return _croniter(normalize(expression), start)


def _croniter(normal: str, start: dt.datetime) -> croniter:
    """The one place croniter is called: Vixie's day rule (a day field starting with
    ``*`` is unrestricted), on an expression :func:`normalize` has produced."""
    return croniter(normal, start, implement_cron_bug=True)


@lru_cache(maxsize=4096)
def _croniter_problem(normal: str) -> str | None:
    """What croniter finds wrong with a normalised expression: its error, "never" when
    nothing matches, None when it fires (cached: every Task save checks its cron)."""
    try:
        _croniter(normal, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError:
        return "never"
    except (CroniterError, ValueError, KeyError) as exc:
        return str(exc).split("] ")[-1]
    return None


def validate_cron(expression: str) -> None:
    """Raise ValidationError with a message that says what is wrong and what is expected."""
    problem = _croniter_problem(normalize(expression))
    if problem == "never":
        raise ValidationError(
            "'%(cron)s' never fires (no date matches it, e.g. 31 February).",
            code="never_fires",
            params={"cron": expression},
        )
    if problem is not None:  # whatever croniter still refuses after the field checks
        raise _invalid(expression, [problem])


def seconds_first_warning(expression: str) -> str | None:
    """A warning when a 6-field expression looks written seconds-first, else None.

    Quartz and Spring put the seconds first (``0 0 12 * * *`` is noon there); here they
    come last, so such an expression is valid but means something else. It is taken
    as seconds-first when it has 6 fields and the last one (our seconds) is

    * ``*`` while the first is not ``*``: every second of a restricted minute, which
      nobody schedules on purpose, but is the usual "any day of the week" of a
      seconds-first expression; or
    * a range or list of values 0-7 only (``1-5``, ``0,6``): a day-of-week look, odd
      as seconds.

    It is a warning, not an error: the expression stays valid.
    """
    if not isinstance(expression, str):
        return None
    fields = _FIELD_RE.findall(expression)
    if len(fields) != 6:
        return None
    first, last = fields[0], fields[5]
    every_second = last == "*" and first != "*"
    numbers = re.split(r"[-,]", last)
    weekday_like = (
        ("-" in last or "," in last)
        and all(_DIGITS_RE.fullmatch(n) for n in numbers)
        and all(int(n) <= 7 for n in numbers)
    )
    if not (every_second or weekday_like):
        return None
    reading = " ".join(f"{spec.name}={value}" for spec, value in zip(_FIELDS, fields, strict=True))
    seconds_last = " ".join([*fields[1:], first])
    return (
        f"'{expression}' looks written seconds-first (Quartz/Spring style), but here the "
        f"seconds come last, so it reads {reading}. If the first field is meant as the "
        f"seconds, write '{seconds_last}'."
    )


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


def _utcoffset(moment: dt.datetime) -> dt.timedelta:
    """``moment``'s UTC offset; every caller passes a time aware in a ZoneInfo zone."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"{moment!r} has no UTC offset; pass a timezone-aware datetime")
    return offset


def _offset_at(second: int, zone: zoneinfo.ZoneInfo) -> dt.timedelta:
    """The zone's UTC offset at a POSIX timestamp (whole seconds)."""
    return _utcoffset(dt.datetime.fromtimestamp(second, zone))


def _transition_in(low: int, high: int, zone: zoneinfo.ZoneInfo) -> int:
    """The first second in (low, high] whose offset differs from ``low``'s (bisection);
    the caller knows ``high``'s differs."""
    before = _offset_at(low, zone)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(middle, zone) == before:
            low = middle
        else:
            high = middle
    return high


def _repeat_end(local: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """For a local time in the second pass of a repeated interval (``fold=1``): the wall
    time at which that interval ends, the first one that occurs once again.

    The clock went back by ``shift`` at a transition within the last ``shift``; it is
    found by bisection (about 20 steps whatever the shift), so a repeated interval of
    any length is stepped over in bounded time.
    """
    earlier = _utcoffset(local.replace(fold=0))
    shift = earlier - _utcoffset(local)
    now = local.timestamp()
    low = int(now - shift.total_seconds()) - 1  # the first pass: the earlier offset
    high = int(now) + 1  # the second pass: the later offset
    transition = _transition_in(low, high, zone)
    return dt.datetime.fromtimestamp(transition, UTC).replace(tzinfo=None) + earlier


@lru_cache(maxsize=65536)
def next_fire(expression: str, after: dt.datetime, zone_name: str) -> dt.datetime:
    """The first instant strictly after ``after`` at which ``expression`` fires (UTC).

    Cached: in one scheduler tick many Tasks share an expression, a zone and a tick.
    """
    zone = get_zone(zone_name)
    # Candidates after ``after``'s wall time cover every later instant. In the second pass
    # of a repeated interval, every wall time up to the interval's end first occurred
    # before ``after``: start there at once, however long the interval (a per-second
    # cron would otherwise step through up to hours of candidates one by one).
    local = after.astimezone(zone)
    start = local.replace(tzinfo=None)
    if local.fold:
        start = max(start, _repeat_end(local, zone) - dt.timedelta(seconds=1))
    candidates = cron_iter(expression, start)
    for _ in range(_MAX_CANDIDATES):
        instant = _resolve(candidates.get_next(dt.datetime), zone)
        if instant > after:
            return instant
    raise ValidationError(  # pragma: no cover - validate_cron rejects such expressions
        # No instant in the text: the scheduler compares messages tick after tick.
        "'%(cron)s' has no next fire time in %(zone)s.",
        params={"cron": expression, "zone": zone_name},
    )


@lru_cache(maxsize=65536)
def prev_fire(expression: str, at: dt.datetime, zone_name: str) -> dt.datetime:
    """The latest instant at or before ``at`` at which ``expression`` fires (UTC)."""
    zone = get_zone(zone_name)
    local = at.astimezone(zone)
    # In the second pass of a repeated interval, fires whose wall time is later than
    # ``at``'s happened (first occurrence) before ``at``, up to the interval's end; wall
    # times from there on come after ``at``. Start right at that end.
    if local.fold:
        start = _repeat_end(local, zone)
    else:
        start = local.replace(tzinfo=None) + dt.timedelta(seconds=1)
    candidates = cron_iter(expression, start)
    for _ in range(_MAX_CANDIDATES):
        instant = _resolve(candidates.get_prev(dt.datetime), zone)
        if instant <= at:
            return instant
    raise ValidationError(  # pragma: no cover - validate_cron rejects such expressions
        "'%(cron)s' has no previous fire time in %(zone)s.",
        params={"cron": expression, "zone": zone_name},
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


# Counting fires without listing them ---------------------------------------------------

#: Intervals up to this long are counted exactly; a longer one is counted exactly over
#: its most recent part this long and extrapolated over the rest (see count_fires).
COUNT_EXACT_SPAN = dt.timedelta(days=366 * 20)
_SECOND = dt.timedelta(seconds=1)
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class _Times:
    """An expression's field sets, as croniter expands them, for counting.

    Days match by month, day-of-month and day-of-week under croniter's reading (with the
    flags :func:`cron_iter` sets): when both day fields are restricted, a day matching
    either fires (Vixie cron's OR rule), else it must match both.
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    days: frozenset[int] | None  # None: every day of the month
    last_day: bool  # 'L': the month's last day
    weekdays: frozenset[int] | None  # 0 = Sunday; None: every day of the week
    nth: tuple[tuple[int, frozenset[int | str]], ...]  # (weekday, {n, 'l'}): 'fri#2', 'L5'
    either: bool  # the OR rule applies

    @property
    def per_day(self) -> int:
        return len(self.seconds) * len(self.minutes) * len(self.hours)

    def day_matches(self, day: dt.date, month_days: int) -> bool:
        if day.month not in self.months:
            return False
        by_date = self.days is None or (
            day.day in self.days or (self.last_day and day.day == month_days)
        )
        weekday = day.isoweekday() % 7
        if self.nth:
            by_week = any(
                weekday == wanted
                and ((day.day - 1) // 7 + 1 in ns or ("l" in ns and day.day + 7 > month_days))
                for wanted, ns in self.nth
            )
            # croniter keeps the n-th weekday on both sides of the OR: it alone decides.
            return by_week if self.either else by_date and by_week
        by_week = self.weekdays is None or weekday in self.weekdays
        return (by_date or by_week) if self.either else (by_date and by_week)

    def before(self, wall: dt.datetime) -> int:
        """How many of a matching day's fire times come before ``wall``'s time of day."""
        count = bisect_left(self.hours, wall.hour) * len(self.minutes) * len(self.seconds)
        if wall.hour in self.hours:
            count += bisect_left(self.minutes, wall.minute) * len(self.seconds)
            if wall.minute in self.minutes:
                count += bisect_left(self.seconds, wall.second)
        return count


#: A field as croniter expands it: numbers, or the markers '*' (any) and 'l' (last).
_Expanded = list[int | str]


def _numbers(field: _Expanded, expression: str, skip: frozenset[str] = frozenset()) -> list[int]:
    """The numbers in an expanded ``field``, leaving out the markers in ``skip``; any
    other marker is syntax that fires cannot be counted for."""
    numbers = []
    for value in field:
        if isinstance(value, int):
            numbers.append(value)
        elif value not in skip:
            raise ValueError(f"'{expression}' uses syntax that fires cannot be counted for")
    return numbers


def _values(field: _Expanded, expression: str, size: int, low: int = 0) -> tuple[int, ...]:
    if field == ["*"]:
        return tuple(range(low, low + size))
    return tuple(sorted(_numbers(field, expression)))


@lru_cache(maxsize=4096)
def _times(expression: str) -> _Times:
    """The field sets of ``expression``, read by croniter as :func:`next_fire` reads it."""
    parsed = cron_iter(expression, dt.datetime(2000, 1, 1))
    # types-croniter declares these as list[list[str]] and dict[str, set[int]]; croniter
    # fills them with numbers and the markers '*' and 'l' (its ExpandedExpression).
    expanded = cast(list[_Expanded], parsed.expanded)
    nth_weekdays = cast(dict[int | str, set[int | str]], parsed.nth_weekday_of_month)
    expressions = parsed.expressions
    if len(expanded) not in (5, 6) or parsed.nearest_weekday:
        raise ValueError(f"'{expression}' uses syntax that fires cannot be counted for")
    day_field, week_field = expanded[2], expanded[4]
    either = (
        day_field[0] != "*"
        and week_field[0] != "*"
        and getattr(parsed, "_day_or", True)
        and not (
            getattr(parsed, "_implement_cron_bug", False)
            and (expressions[2].startswith("*") or expressions[4].startswith("*"))
        )
    )
    nth: dict[int, set[int | str]] = {}
    for weekday, ns in nth_weekdays.items():
        for day in range(7) if weekday == "*" else _numbers([weekday], expression):
            nth.setdefault(day, set()).update(ns)
    days = None if day_field == ["*"] else _numbers(day_field, expression, frozenset("*l"))
    weekdays = None if week_field == ["*"] else _numbers(week_field, expression)
    return _Times(
        seconds=_values(expanded[5], expression, 60) if len(expanded) == 6 else (0,),
        minutes=_values(expanded[0], expression, 60),
        hours=_values(expanded[1], expression, 24),
        months=frozenset(_values(expanded[3], expression, 12, 1)),
        days=None if days is None else frozenset(days),
        last_day="l" in day_field,
        weekdays=None if weekdays is None else frozenset(d % 7 for d in weekdays),
        nth=tuple((day, frozenset(ns)) for day, ns in sorted(nth.items())),
        either=either,
    )


def _month_days(day: dt.date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _matching_days(times: _Times, first: dt.date, last: dt.date) -> int:
    """Days in [first, last] on which ``times`` fires, a month at a time."""
    count = 0
    day = first
    while day <= last:
        month_days = _month_days(day)
        month_last = min(last, day.replace(day=month_days))
        if day.month in times.months:
            if times.days is None and times.weekdays is None and not times.nth:
                count += month_last.day - day.day + 1
            else:
                for number in range(day.day, month_last.day + 1):
                    count += times.day_matches(day.replace(day=number), month_days)
        day = month_last + _DAY
    return count


def _walls_between(times: _Times, low: dt.datetime, high: dt.datetime) -> int:
    """Matching wall-clock times in [low, high) (naive, whole seconds), DST aside."""
    if high <= low:
        return 0
    first, last = low.date(), high.date()
    if first == last:
        if not times.day_matches(first, _month_days(first)):
            return 0
        return times.before(high) - times.before(low)
    count = times.per_day * _matching_days(times, first + _DAY, last - _DAY)
    if times.day_matches(first, _month_days(first)):
        count += times.per_day - times.before(low)
    if times.day_matches(last, _month_days(last)):
        count += times.before(high)
    return count


def _first_wall(instant: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The earliest wall time (naive) whose fire would come at or after ``instant``.

    Fires are monotonic in their wall time: a wall time fires at its first occurrence, and
    every wall time of a DST gap (and the gap's end) fires at the transition. So the wall
    times firing in [a, b) are exactly those in [_first_wall(a), _first_wall(b)).
    """
    local = instant.astimezone(zone)
    if local.fold:  # second pass: wall times up to the repeated interval's end fired before
        return _repeat_end(local, zone)
    before = _utcoffset((instant - _SECOND).astimezone(zone))
    if before < _utcoffset(local):  # ``instant`` is a gap's end: the gap fires now too
        return (instant + before).replace(tzinfo=None)
    return local.replace(tzinfo=None)


def _gaps(first: dt.datetime, last: dt.datetime, zone: zoneinfo.ZoneInfo):
    """The DST gaps whose transition lies in [first, last]: (first missing wall time,
    wall time at the transition), found by sampling the offset once a day and bisecting.

    Two transitions less than a day apart that cancel out are not seen (no zone has had
    such a pair in the tz database's recent decades).
    """
    low = int(first.timestamp()) - 1
    end = int(last.timestamp())
    offset = _offset_at(low, zone)
    while low < end:
        high = min(low + 86_400, end)
        after = _offset_at(high, zone)
        if after == offset:
            low = high
            continue
        transition = _transition_in(low, high, zone)
        after = _offset_at(transition, zone)
        if after > offset:
            at = dt.datetime.fromtimestamp(transition, UTC).replace(tzinfo=None)
            yield at + offset, at + after
        low, offset = transition, after


def count_fires(expression: str, start: dt.datetime, end: dt.datetime, zone_name: str) -> int:
    """How many instants in [start, end] ``expression`` fires at in ``zone_name``: what
    ``len(fires_between(...))`` gives, without listing them.

    Whole days count as their number of fire times (seconds x minutes x hours) when the
    day matches; the first and last days count the fire times before or after a time of
    day (by bisection in the sorted field values). DST needs one correction: a gap's wall
    times all fire once, at the transition, so each gap holding k > 1 fire times removes
    k - 1; a repeated interval needs none (each wall time fires once, at its first
    occurrence). Transitions are found by sampling the zone's offset once a day. The
    cost grows with the number of days, not of fires: a per-second cron over a year takes
    a few milliseconds.

    An interval longer than :data:`COUNT_EXACT_SPAN` (20 years) is counted exactly over
    its most recent 20 years; the older part is estimated at the same rate (rounded), so
    the cost stays bounded whatever the interval.
    """
    first = start.replace(microsecond=0) + (_SECOND if start.microsecond else dt.timedelta(0))
    last = end.replace(microsecond=0)
    if last < first:
        return 0
    if last - first > COUNT_EXACT_SPAN:
        recent_start = last - COUNT_EXACT_SPAN
        recent = count_fires(expression, recent_start, last, zone_name)
        older = recent * ((recent_start - first) / COUNT_EXACT_SPAN)
        return recent + round(older)
    zone = get_zone(zone_name)
    times = _times(expression)
    count = _walls_between(times, _first_wall(first, zone), _first_wall(last + _SECOND, zone))
    for gap_start, gap_end in _gaps(first, last, zone):
        collapsed = _walls_between(times, gap_start, gap_end + _SECOND)
        count -= max(0, collapsed - 1)
    return count
