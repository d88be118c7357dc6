"""What a tick does for one due Task: pure functions of its policies and the clock.

Kept free of the database so that catch-up and overlap rules are read, and tested, on
their own (tests call them with made-up times).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from scheduler.cron import count_fires, next_fire, prev_fire


class Catchup(StrEnum):
    """What to do with ticks missed while the scheduler was down (``Task.catchup``)."""

    SKIP = "skip"
    LATEST = "latest"
    ALL = "all"


class Overlap(StrEnum):
    """What to do when a tick comes while a run is queued or running (``Task.overlap``)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    ALLOW = "allow"


@dataclass(frozen=True)
class CatchupPlan:
    fires: list[dt.datetime]  # intended times to run, oldest first
    missed: int  # due ticks that will not run


def plan_catchup(
    *,
    cron: str,
    zone: str,
    next_run_at: dt.datetime,
    now: dt.datetime,
    policy: str,
    window: dt.timedelta,
    max_runs: int,
    grace: dt.timedelta,
) -> CatchupPlan:
    """Which of the ticks in [next_run_at, now] to run under the Task's catch-up policy.

    A tick within ``grace`` (the scheduler's period) of ``now`` is on time; older ones
    were missed (the scheduler was down or late). Due ticks are counted, not listed
    (:func:`~scheduler.cron.count_fires`), so a long outage of a per-second Task costs
    about as much as a short one, and the missed count is exact (estimated only beyond
    20 years).
    """
    if next_fire(cron, next_run_at, zone) > now:  # the usual case: exactly one tick due
        due, latest = 1, next_run_at
    else:
        latest = prev_fire(cron, now, zone)
        due = count_fires(cron, next_run_at, now, zone)
    on_time = now - latest < grace
    if policy == Catchup.SKIP:
        fires = [latest] if on_time else []
    elif policy == Catchup.LATEST:
        fires = [latest]
    elif policy == Catchup.ALL:
        fires = _latest_fires(cron, zone, latest, max(next_run_at, now - window), max_runs)
    else:
        raise ValueError(f"unknown catch-up policy {policy!r}")
    return CatchupPlan(fires=fires, missed=max(0, due - len(fires)))


def _latest_fires(
    cron: str, zone: str, latest: dt.datetime, start: dt.datetime, max_runs: int
) -> list[dt.datetime]:
    """Up to ``max_runs`` fires in [start, latest], walking back from ``latest``."""
    fires: list[dt.datetime] = []
    instant = latest
    while instant >= start and len(fires) < max_runs:
        fires.append(instant)
        instant = prev_fire(cron, instant - dt.timedelta(microseconds=1), zone)
    fires.reverse()
    return fires


def plan_overlap(
    fires: list[dt.datetime], *, policy: str, queued: int, running: int
) -> tuple[list[dt.datetime], int]:
    """Split ``fires`` into those to defer and the number skipped by the overlap policy."""
    if not fires or policy == Overlap.ALLOW:
        return fires, 0
    if policy == Overlap.SKIP:
        allowed = 0 if queued or running else 1
    elif policy == Overlap.BUFFER_ONE:
        allowed = 0 if queued else 1
    else:
        raise ValueError(f"unknown overlap policy {policy!r}")
    chosen = fires[-allowed:] if allowed else []
    return chosen, len(fires) - len(chosen)
