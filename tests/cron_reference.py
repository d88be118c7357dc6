"""A small, independent cron matcher for tests: field sets as crontab(5) defines them.

Each field is a comma list of ``*``, ``N``, ``N-M``, ``*/S``, ``N-M/S`` or ``N/S``
(N to the field's end, every S), with month and day names. Day-of-week 7 is Sunday.
Day-of-month and day-of-week follow Vixie cron: when both are restricted (neither
starts with ``*``) a day matching either fires, otherwise it must match both. Seconds
are a 6th field, last; with 5 fields they are 0. It is slow and simple on purpose.
"""

from __future__ import annotations

import datetime as dt

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7), (0, 59)]
MONTH_NUMBERS = {m: i for i, m in enumerate(MONTHS, 1)}
DAY_NUMBERS = {d: i for i, d in enumerate(DAYS)}
NAMES = [{}, {}, {}, MONTH_NUMBERS, DAY_NUMBERS, {}]


def values(text: str, index: int) -> set[int]:
    """The values one field stands for."""
    low, high = BOUNDS[index]

    def number(token: str) -> int:
        return NAMES[index][token.lower()] if token.lower() in NAMES[index] else int(token)

    result: set[int] = set()
    for item in text.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-")
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step else start
        result.update(range(start, end + 1, int(step or 1)))
    return {v % 7 for v in result} if index == 4 else result


def _day_matches(fields: list[str], sets: list[set[int]], day: dt.date) -> bool:
    if day.month not in sets[3]:
        return False
    in_dom, in_dow = day.day in sets[2], day.isoweekday() % 7 in sets[4]
    if fields[2].startswith("*") or fields[4].startswith("*"):
        return in_dom and in_dow
    return in_dom or in_dow


def _parse(expression: str) -> tuple[list[str], list[set[int]]]:
    fields = expression.split()
    if len(fields) == 5:
        fields = [*fields, "0"]
    return fields, [values(text, i) for i, text in enumerate(fields)]


def matches(expression: str, wall: dt.datetime) -> bool:
    """Whether the naive wall time ``wall`` is a fire time of ``expression``."""
    fields, sets = _parse(expression)
    return (
        _day_matches(fields, sets, wall.date())
        and wall.hour in sets[1]
        and wall.minute in sets[0]
        and wall.second in sets[5]
        and wall.microsecond == 0
    )


def next_after(expression: str, after: dt.datetime, years: int = 30) -> dt.datetime | None:
    """The first naive wall time strictly after ``after`` matching ``expression``."""
    fields, sets = _parse(expression)
    day = after.date()
    for _ in range(366 * years):
        if _day_matches(fields, sets, day):
            for hour in sorted(sets[1]):
                for minute in sorted(sets[0]):
                    for second in sorted(sets[5]):
                        candidate = dt.datetime.combine(day, dt.time(hour, minute, second))
                        if candidate > after:
                            return candidate
        day += dt.timedelta(days=1)
    return None
