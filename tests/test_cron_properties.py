"""Property tests: next-run computation on random crons and zones.

The oracle is ``tests/cron_reference.py``, a plain matcher written from crontab(5).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cron import next_fire, prev_fire, validate_cron
from tests import cron_reference as ref

UTC = dt.UTC
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
]


def field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.integers(1, max(1, (high - low) // 2)).map(lambda step: f"*/{step}"),
        st.tuples(value, value).map(lambda p: f"{min(p)}-{max(p)}"),
        st.lists(value, min_size=2, max_size=3, unique=True).map(
            lambda v: ",".join(map(str, sorted(v)))
        ),
    )


crons = st.tuples(field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 6)).map(" ".join)
instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(cron=crons, after=instants)
def test_next_fire_equals_the_reference_in_utc(cron, after):
    expected = ref.next_after(cron, after.replace(tzinfo=None)).replace(tzinfo=UTC)
    assert next_fire(cron, after, "UTC") == expected


@settings(max_examples=300, deadline=None)
@given(cron=crons, after=instants, zone=st.sampled_from(ZONES))
def test_next_fire_in_a_zone(cron, after, zone):
    tz = zoneinfo.ZoneInfo(zone)
    result = next_fire(cron, after, zone)
    assert result > after
    wall = result.astimezone(tz)
    naive_expected = ref.next_after(cron, after.astimezone(tz).replace(tzinfo=None))
    offsets = {after.astimezone(tz).utcoffset(), result.astimezone(tz).utcoffset()}
    if len(offsets) == 1:
        # No DST change in between: plain wall-clock arithmetic holds.
        assert wall.replace(tzinfo=None) == naive_expected
    else:
        # Across a change the result is a matching wall time, or the end of a DST gap
        # (the instant the clock jumped), standing in for a wall time that did not exist.
        before = (result - dt.timedelta(seconds=1)).astimezone(tz)
        is_gap_end = before.utcoffset() < wall.utcoffset()
        assert ref.matches(cron, wall.replace(tzinfo=None)) or is_gap_end
    # Nothing fires in between: the previous fire before the result is at or before after.
    assert prev_fire(cron, result - dt.timedelta(microseconds=1), zone) <= after


@settings(max_examples=200, deadline=None)
@given(cron=crons, at=instants, zone=st.sampled_from(ZONES))
def test_prev_and_next_are_consistent(cron, at, zone):
    previous = prev_fire(cron, at, zone)
    assert previous <= at
    assert next_fire(cron, previous, zone) > at


#: Cron-looking input: fields that are mostly valid, and tokens that are mostly not, so that
#: both answers come up often.
GOOD = ["*", "*/5", "0", "1", "7", "1-5", "1,2", "*/15", "2-4/2"]
BAD = ["*/0", "60", "5-1", "15W", "?", "H", "-1", "x", "5#6", "0\u00a00"]
EXTRAS = ["MON", "jan", "L", "5#2", "L5", "@daily", "@reboot", "@every"]
cron_like = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(GOOD + BAD + EXTRAS), min_size=1, max_size=7).map(" ".join),
    st.lists(st.sampled_from(GOOD * 4 + BAD), min_size=5, max_size=6).map(" ".join),
)


@settings(max_examples=500, deadline=None)
@given(text=cron_like, after=instants)
def test_any_text_is_refused_with_a_message_or_schedulable(text, after):
    """Nothing but a ValidationError that says something, and nothing accepted that the
    scheduler then cannot compute a next run for."""
    try:
        validate_cron(text)
    except ValidationError as exc:
        assert exc.messages and all(message.strip() for message in exc.messages)
        return
    fire = next_fire(text, after, "UTC")
    assert fire > after
    assert prev_fire(text, fire, "UTC") == fire


@pytest.mark.parametrize("cron", ["*/10 * * * * *", "0 0 * * * 30"])
def test_seconds_field_is_last(cron):
    after = dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    expected = ref.next_after(cron, after.replace(tzinfo=None)).replace(tzinfo=UTC)
    assert next_fire(cron, after, "UTC") == expected
