"""One Task that cannot be planned never stops the tick for the others.

Against real PostgreSQL on a simulated clock. A broken Task is put in the database with
SQL, as a row edited elsewhere, written before a validation rule existed, or left behind
by a deploy that removed its code would be: the model's own checks would refuse it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler.models import SchedulerTick, Task, TaskRun
from scheduler.tick import run_tick

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECOND = dt.timedelta(seconds=1)
MIN = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean(clean_jobs):
    """Every test here starts with empty procrastinate tables."""


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def tick_logs() -> Iterator[Records]:
    """Every record the tick logs (its logger does not propagate to the root one)."""
    handler, logger = Records(), logging.getLogger("scheduler.tick")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def break_task(task: Task, column: str, value: str) -> None:
    """Write ``value`` into ``column`` behind the model's back."""
    cast = "::jsonb" if column == "kwargs" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE scheduler_task SET {column} = %s{cast} WHERE id = %s", [value, task.pk]
        )


def runs_of(task: Task) -> list[dt.datetime]:
    return sorted(TaskRun.objects.filter(task=task).values_list("scheduled_for", flat=True))


def last_tick() -> SchedulerTick:
    return SchedulerTick.objects.order_by("-started_at", "-id").first()


def seed(tenant, count: int, next_run_at: dt.datetime, **fields) -> list[Task]:
    """``count`` due Tasks of the probe integration, in one INSERT (told apart by their
    kwargs: identical Tasks are refused; a negative fail_first never fails)."""
    integration, _ = Integration.objects.get_or_create(name="probe", tenant=tenant)
    fields = {"name": "flaky", "cron": "* * * * *", **fields}
    return Task.objects.bulk_create(
        Task(
            integration=integration,
            tenant=tenant,
            next_run_at=next_run_at,
            kwargs={"fail_first": -i},
            **fields,
        )
        for i in range(count)
    )


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("timezone", "Mars/Olympus", ["next run time", "Mars/Olympus"]),
        ("cron", "61 * * * *", ["next run time", "61 * * * *"]),
        ("cron", "0 0 30 2 *", ["next run time", "CroniterBadDateError"]),
        ("name", "vanished", ["task's code", "no task 'vanished'", "Deploy"]),
        ("kwargs", '{"since_days": 7}', ["kwargs", "since_days", "Accepted kwargs: fail_first"]),
        ("catchup", "sometimes", ["catch-up", "sometimes"]),
    ],
    ids=["unknown-zone", "invalid-cron", "never-firing-cron", "code-gone", "kwargs", "policy"],
)
def test_one_broken_task_among_a_thousand(tenant, column, value, says):
    tasks = seed(tenant, 1000, next_run_at=T0)
    broken = tasks[500]
    break_task(broken, column, value)

    result = run_tick(T0)

    assert len(result.deferred) == 999
    assert TaskRun.objects.count() == ProcrastinateJob.objects.count() == 999
    assert not TaskRun.objects.filter(task=broken).exists()
    assert Task.objects.filter(next_run_at=T0 + MIN).count() == 999
    tick = last_tick()
    assert (tick.due, tick.deferred, tick.errors) == (1000, 999, 1)
    broken.refresh_from_db()
    for words in says:
        assert words in broken.plan_error
    assert broken.plan_error_at == T0
    assert broken.next_run_at == T0  # still due: retried at the next tick


def test_a_lasting_error_is_logged_once_kept_and_cleared_when_fixed(probe_task, tick_logs):
    healthy = probe_task(now=T0 - MIN, overlap="allow")
    broken = probe_task(now=T0 - MIN, overlap="allow")
    break_task(broken, "timezone", "Mars/Olympus")

    for minute in range(3):
        run_tick(T0 + minute * MIN)

    warnings = [
        r
        for r in tick_logs.records
        if r.levelno == logging.WARNING and f"task {broken.pk} " in r.getMessage()
    ]
    assert len(warnings) == 1
    broken.refresh_from_db()
    assert "Mars/Olympus" in broken.plan_error
    assert broken.plan_error_at == T0  # when the error first came
    assert broken.next_run_at == T0
    assert [t.errors for t in SchedulerTick.objects.order_by("started_at", "id")] == [1, 1, 1]
    assert runs_of(healthy) == [T0, T0 + MIN, T0 + 2 * MIN]

    break_task(broken, "timezone", "")  # fixed: the tenant's zone again
    run_tick(T0 + 3 * MIN)

    broken.refresh_from_db()
    assert (broken.plan_error, broken.plan_error_at) == ("", None)
    # The ticks it could not plan went through its catch-up policy ('latest').
    assert runs_of(broken) == [T0 + 3 * MIN]
    assert broken.missed_count == 3
    assert broken.next_run_at == T0 + 4 * MIN
    assert last_tick().errors == 0


def test_an_edit_with_a_stale_instance_keeps_the_plan_error(probe_task):
    broken = probe_task(now=T0 - MIN)
    stale = Task.objects.get(pk=broken.pk)
    break_task(broken, "name", "vanished")
    run_tick(T0)
    stale.pause_note = "looked at it"
    stale.save()
    broken.refresh_from_db()
    assert "vanished" in broken.plan_error and broken.plan_error_at == T0


def test_a_per_second_task_across_a_three_hour_fall_back(probe_task):
    """Antarctica/Casey went from UTC+11 to UTC+8 at 2023-03-08 16:00 UTC: at that
    instant the next fire of a per-second cron is three hours away (the repeated wall
    times fired the first time round)."""
    back = dt.datetime(2023, 3, 8, 16, tzinfo=UTC)
    casey = probe_task("* * * * * *", now=back - 2 * SECOND, timezone="Antarctica/Casey")
    other = probe_task(now=back - MIN)

    run_tick(back)

    assert runs_of(casey) == [back - SECOND]
    assert runs_of(other) == [back]
    casey.refresh_from_db()
    assert casey.next_run_at == back + dt.timedelta(hours=3)
    assert (casey.plan_error, last_tick().errors) == ("", 0)


@pytest.mark.parametrize("days", [7, 365])
def test_a_per_second_task_down_for_days_misses_every_second(tenant, days):
    """With catch-up 'latest' it runs once; every other second of the outage is a miss."""
    (task,) = seed(tenant, 1, next_run_at=T0, cron="* * * * * *", timezone="UTC")
    now = T0 + days * DAY

    run_tick(now)

    assert runs_of(task) == [now]
    task.refresh_from_db()
    seconds_due = days * 86_400 + 1  # [T0, now], both ends included
    assert task.missed_count == seconds_due - 1
    assert last_tick().missed == seconds_due - 1
    assert task.next_run_at == now + SECOND
