"""Fire times across long DST shifts, and missed ticks counted without listing them.

Pure functions: no database. The brute force every count is checked against is
``fires_between`` (one ``next_fire`` per fire); ``tests/test_cron_properties.py`` checks
``next_fire`` against the independent matcher in ``tests/cron_reference.py``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.cron import count_fires, fires_between, next_fire, prev_fire, validate_cron
from scheduler.policies import plan_catchup

UTC = dt.UTC
SECOND = dt.timedelta(seconds=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

# Antarctica/Casey went from UTC+11 to UTC+8 at 2023-03-08 16:00 UTC: the wall times
# 00:00-02:59:59 of 9 March occurred twice, three hours apart.
CASEY = "Antarctica/Casey"
CASEY_BACK = dt.datetime(2023, 3, 8, 16, tzinfo=UTC)
CASEY_SHIFT = 3 * HOUR

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute shifts
    "America/Santiago",
    "Pacific/Chatham",  # +12:45 / +13:45
    CASEY,
]


def every_fire(cron: str, start: dt.datetime, end: dt.datetime, zone: str) -> int:
    """The brute force: list every fire in [start, end], one next_fire at a time."""
    fires, more = fires_between(cron, start, end, zone, 10**9)
    assert not more
    return len(fires)


def transitions(zone: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Instants at which ``zone``'s UTC offset changes, to the minute (test's own scan)."""
    tz = zoneinfo.ZoneInfo(zone)
    found, at = [], start
    offset = at.astimezone(tz).utcoffset()
    while at < end:
        later = at + 6 * HOUR
        if later.astimezone(tz).utcoffset() != offset:
            while later - at > MINUTE:
                middle = at + (later - at) / 2
                if middle.astimezone(tz).utcoffset() == offset:
                    at = middle
                else:
                    later = middle
            offset = later.astimezone(tz).utcoffset()
            found.append(later.replace(second=0, microsecond=0))
        at = later
    return found


TRANSITIONS = [
    (zone, when)
    for zone in ZONES
    for when in transitions(
        zone, dt.datetime(2023, 1, 1, tzinfo=UTC), dt.datetime(2028, 12, 31, tzinfo=UTC)
    )
]


# A fall-back of three hours -------------------------------------------------------------


@pytest.mark.parametrize(
    "after",
    [
        CASEY_BACK - SECOND,
        CASEY_BACK,
        CASEY_BACK + SECOND,
        CASEY_BACK + HOUR,
        CASEY_BACK + CASEY_SHIFT - SECOND,
    ],
)
@pytest.mark.parametrize("cron", ["* * * * * *", "* * * * *"])
def test_next_fire_steps_over_a_three_hour_repeat(cron, after):
    """Wall times 00:00-02:59 already fired before the clocks went back: the next fire
    is 03:00 local (UTC+8), three hours after the transition, wherever ``after`` is in
    the repeated interval."""
    assert next_fire(cron, after, CASEY) == CASEY_BACK + CASEY_SHIFT


@pytest.mark.parametrize(
    "at", [CASEY_BACK, CASEY_BACK + SECOND, CASEY_BACK + HOUR, CASEY_BACK + CASEY_SHIFT - SECOND]
)
@pytest.mark.parametrize(("cron", "step"), [("* * * * * *", SECOND), ("* * * * *", MINUTE)])
def test_prev_fire_steps_back_over_a_three_hour_repeat(cron, step, at):
    """In the second pass nothing fires: the latest fire is the last one before the
    transition (02:59:59, or 02:59, at UTC+11)."""
    assert prev_fire(cron, at, CASEY) == CASEY_BACK - step


def test_next_fire_after_the_repeat_is_unchanged():
    assert next_fire("* * * * * *", CASEY_BACK + CASEY_SHIFT, CASEY) == (
        CASEY_BACK + CASEY_SHIFT + SECOND
    )
    assert prev_fire("* * * * * *", CASEY_BACK + CASEY_SHIFT, CASEY) == CASEY_BACK + CASEY_SHIFT


@pytest.mark.parametrize("cron", ["* * * * * *", "*/7 * * * * *", "* * * * *", "*/20 0-3 * * *"])
def test_counting_across_the_three_hour_repeat_matches_the_brute_force(cron):
    start, end = CASEY_BACK - HOUR, CASEY_BACK + CASEY_SHIFT + HOUR
    assert count_fires(cron, start, end, CASEY) == every_fire(cron, start, end, CASEY)


# Counting equals listing ----------------------------------------------------------------


def field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.integers(2, max(2, (high - low) // 2)).map(lambda step: f"*/{step}"),
        st.tuples(value, value).filter(lambda p: p[0] != p[1]).map(lambda p: f"{min(p)}-{max(p)}"),
        st.lists(value, min_size=2, max_size=3, unique=True).map(
            lambda v: ",".join(map(str, sorted(v)))
        ),
    )


#: Day-of-month and day-of-week together: plain fields (both restricted: either matches),
#: the last day of the month, n-th and last weekdays.
days = st.one_of(
    st.tuples(field(1, 31), field(0, 6)),
    st.tuples(st.sampled_from(["L", "1,L", "15,L"]), field(0, 6)),
    st.tuples(
        st.just("*"),
        st.one_of(
            st.tuples(st.integers(0, 6), st.integers(1, 5)).map(lambda p: f"{p[0]}#{p[1]}"),
            st.integers(0, 6).map(lambda d: f"L{d}"),
        ),
    ),
)


@st.composite
def minute_crons(draw) -> str:
    day_of_month, day_of_week = draw(days)
    return " ".join(
        [draw(field(0, 59)), draw(field(0, 23)), day_of_month, draw(field(1, 12)), day_of_week]
    )


@st.composite
def second_crons(draw) -> str:
    """6 fields, kept to a few hours a day so that listing every fire stays affordable."""
    hours = draw(st.sampled_from(["*", "0-3", "1,2", "2", "*/5"]))
    return f"{draw(field(0, 59))} {hours} * * * {draw(field(0, 59))}"


@st.composite
def intervals(draw, longest: dt.timedelta):
    """[start, end] near one of the zones' offset changes, or anywhere in 2025-2028."""
    zone, anchor = draw(st.sampled_from(TRANSITIONS))
    if draw(st.booleans()):
        zone = draw(st.sampled_from(ZONES))
        anchor = draw(
            st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(UTC))
        )
    start = anchor - draw(st.timedeltas(dt.timedelta(0), longest))
    end = start + draw(st.timedeltas(dt.timedelta(0), longest))
    return zone, start, end


def fires(cron: str) -> bool:
    try:
        validate_cron(cron)
    except ValidationError:
        return False
    return True


@settings(max_examples=250, deadline=None)
@given(cron=minute_crons(), interval=intervals(longest=4 * DAY))
def test_count_equals_brute_force_for_minute_crons(cron, interval):
    zone, start, end = interval
    assume(fires(cron))
    assert count_fires(cron, start, end, zone) == every_fire(cron, start, end, zone)


@settings(max_examples=120, deadline=None)
@given(cron=second_crons(), interval=intervals(longest=5 * HOUR))
def test_count_equals_brute_force_for_second_crons(cron, interval):
    zone, start, end = interval
    assume(fires(cron))
    assert count_fires(cron, start, end, zone) == every_fire(cron, start, end, zone)


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("cron", ["17 */4 * * *", "30 2 * * *", "0 0 L * *", "0 9 * * L5"])
def test_count_equals_brute_force_over_a_year(cron, zone):
    start = dt.datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    end = start + 400 * DAY
    assert count_fires(cron, start, end, zone) == every_fire(cron, start, end, zone)


def test_beyond_twenty_years_the_count_is_close():
    """Past 20 years the older part is extrapolated: close, not exact."""
    start = dt.datetime(1926, 1, 1, tzinfo=UTC)
    end = dt.datetime(2026, 1, 1, tzinfo=UTC)
    days = (end - start).days + 1  # a daily cron in UTC fires once a day, both ends in
    assert abs(count_fires("0 0 * * *", start, end, "UTC") - days) <= days / 1000


# Missed ticks of a per-second Task --------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "days", "repeated_seconds"),
    [
        ("UTC", 7, 0),
        ("UTC", 365, 0),
        # 2026-06-01 + 365 days holds one fall-back (25 Oct 2026): for the hour the clock
        # repeats, nothing fires. The spring-forward (28 Mar 2027) skips wall times but
        # no instant: every instant still fires once.
        ("Europe/Berlin", 365, 3600),
    ],
)
def test_a_per_second_task_down_for_days_counts_every_missed_tick(zone, days, repeated_seconds):
    down_at = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    now = down_at + days * DAY
    plan = plan_catchup(
        cron="* * * * * *",
        zone=zone,
        next_run_at=down_at,
        now=now,
        policy="latest",
        window=DAY,
        max_runs=100,
        grace=SECOND,
    )
    assert plan.fires == [now]
    due = days * 86_400 + 1 - repeated_seconds  # every second of [down_at, now], both ends
    assert plan.missed == due - 1  # all but the one run
