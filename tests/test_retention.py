"""Bounded history against real PostgreSQL: old finished TaskRuns and audit entries go,
in bounded batches, and nothing that must stay is ever touched.

What must stay: runs still queued or running, runs whose job still exists (it can be
retried), runs the tick's exactly-once check can still look up, recent rows. A purge cut
off between batches or in the middle of one loses none of them, and a purge makes way for
a tick. Bad settings stop start-up with a message naming the fix.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import DatabaseError, connection
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from audit.models import AuditEntry
from audit.retention import check_audit_retention
from scheduler import run_records, runs
from scheduler.maintenance import purge_history
from scheduler.models import Task, TaskRun
from scheduler.planner import RunToDefer
from scheduler.retention import (
    Pacing,
    check_retention_settings,
    purge_audit_entries,
    purge_task_runs,
    tick_running,
    tick_waiting,
)
from scheduler.tick import run_tick
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC
NOW = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
DAY = dt.timedelta(days=1)
FINISHED = ("succeeded", "failed", "cancelled")


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def make_run(task: Task, age: dt.timedelta, status: str = "succeeded", *, slot: int = 0) -> TaskRun:
    """A run enqueued ``age`` before NOW whose job is gone (as after JOB_RETENTION_HOURS)."""
    when = NOW - age - dt.timedelta(seconds=slot)
    return TaskRun.objects.create(
        task=task, tenant=task.tenant, scheduled_for=when, enqueued_at=when, status=status
    )


def pacing(batch_size: int = 1000, **options) -> Pacing:
    return Pacing(batch_size, float("inf"), **options)


def ids(model) -> set[int]:
    return set(model.objects.values_list("id", flat=True))


@pytest.fixture
def task(probe_task) -> Task:
    return probe_task("*/5 * * * *", now=NOW)


# ----------------------------------------------------------------------------- what goes


@pytest.mark.django_db
def test_old_finished_runs_go_recent_and_active_ones_stay(task):
    old = [make_run(task, 91 * DAY, status, slot=i) for i, status in enumerate(FINISHED)]
    active = [
        make_run(task, 400 * DAY, status, slot=i) for i, status in enumerate(["todo", "doing"])
    ]
    recent = make_run(task, 89 * DAY)
    at_the_cutoff = make_run(task, 90 * DAY)

    result = purge_task_runs(NOW, retention_days=90, pacing=pacing())

    assert ids(TaskRun) == {r.pk for r in [*active, recent, at_the_cutoff]}
    assert result.deleted == len(old) and result.complete


@pytest.mark.django_db
def test_a_run_whose_job_still_exists_stays_until_the_job_is_gone(task):
    """Its job can still be retried from admin: the trigger would then look for the run."""
    (run_id,) = run_records.defer_runs([RunToDefer.of(task, "probe.flaky", NOW - 100 * DAY)])
    for status in ("doing", "failed"):  # a worker takes the job; it fails
        sql("UPDATE procrastinate_jobs SET status = %s", [status])
    sql("UPDATE scheduler_taskrun SET enqueued_at = %s", [NOW - 100 * DAY])
    assert TaskRun.objects.get(pk=run_id).status == "failed"

    purge_task_runs(NOW, retention_days=90, pacing=pacing())
    assert TaskRun.objects.filter(pk=run_id).exists()

    sql("DELETE FROM procrastinate_jobs")  # what delete_old_jobs does after JOB_RETENTION_HOURS
    purge_task_runs(NOW, retention_days=90, pacing=pacing())
    assert not TaskRun.objects.filter(pk=run_id).exists()


@pytest.mark.django_db
def test_retention_zero_keeps_everything(task, settings):
    make_run(task, 5000 * DAY)
    AuditEntry.objects.update(created_at=NOW - 5000 * DAY)
    entries = AuditEntry.objects.count()
    settings.TASKRUN_RETENTION_DAYS = 0
    settings.AUDIT_RETENTION_DAYS = 0

    purge_history(NOW, pacing())

    assert TaskRun.objects.count() == 1 and AuditEntry.objects.count() == entries > 0


@pytest.mark.django_db
def test_a_purged_history_never_lets_a_tick_run_twice(probe_task):
    """The scheduler was down for 100 days; the Task catches up every monthly fire within
    its 130-day window. The first missed fire had been run by hand at its exact time, so
    that (task, time) has its run: a 90-day purge must not delete it, or the catch-up would
    run that fire a second time."""
    first = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    task = probe_task(
        "0 12 1 * *", now=first - DAY, catchup="all", catchup_window=130 * DAY, overlap="allow"
    )
    assert task.next_run_at == first
    manual = runs.run_now(task, now=first)
    sql("DELETE FROM procrastinate_jobs")  # it ran; its job is gone since
    sql(
        "UPDATE scheduler_taskrun SET status = 'succeeded', enqueued_at = %s WHERE id = %s",
        [first, manual.pk],
    )

    purge_task_runs(NOW, retention_days=90, pacing=pacing())
    run_tick(NOW)

    assert list(TaskRun.objects.filter(scheduled_for=first).values_list("id", flat=True)) == [
        manual.pk
    ]
    caught_up = TaskRun.objects.filter(manual=False).values_list("scheduled_for", flat=True)
    assert sorted(caught_up) == [dt.datetime(2026, m, 1, 12, tzinfo=UTC) for m in (3, 4, 5, 6)]


@pytest.mark.django_db
def test_a_finished_run_before_its_tasks_next_run_goes_even_with_a_long_catchup_window(probe_task):
    """The window does not hold history back: a run before next_run_at is never looked up."""
    task = probe_task("*/5 * * * *", now=NOW, catchup="all", catchup_window=400 * DAY)
    old = make_run(task, 200 * DAY)
    purge_task_runs(NOW, retention_days=90, pacing=pacing())
    assert not TaskRun.objects.filter(pk=old.pk).exists()


@pytest.mark.django_db
def test_audit_entries_go_by_age_whoever_they_belong_to(user):
    gone = Tenant.create(user, "gone", "ops@gone.example")
    kept = Tenant.create(user, "kept", "ops@kept.example")
    gone_id = gone.pk
    gone.delete()  # its trail outlives it
    trail = AuditEntry.objects.filter(tenant_id=gone_id)
    assert trail.count() >= 2
    AuditEntry.objects.update(created_at=NOW - 400 * DAY)
    recent = AuditEntry.objects.filter(tenant_id=kept.pk).order_by("id").first()
    AuditEntry.objects.filter(pk=recent.pk).update(created_at=NOW - 364 * DAY)

    result = purge_audit_entries(NOW, retention_days=365, pacing=pacing())

    assert ids(AuditEntry) == {recent.pk}
    assert result.deleted >= 3 and not trail.exists()


# ----------------------------------------------------------------------------- batches


@pytest.mark.django_db
def test_each_statement_deletes_at_most_a_batch(task, settings):
    for i in range(10):
        make_run(task, 100 * DAY, slot=i)
    kept = make_run(task, DAY)
    settings.RETENTION_BATCH_SIZE = 3
    left_before_each_batch: list[int] = []

    def watch() -> bool:
        left_before_each_batch.append(TaskRun.objects.count())
        return False

    result = purge_task_runs(NOW, retention_days=90, pacing=Pacing.from_settings(stop_if=watch))

    assert left_before_each_batch == [11, 8, 5, 2]
    assert (result.deleted, result.batches, result.complete) == (10, 4, True)
    assert ids(TaskRun) == {kept.pk}


@pytest.mark.django_db
def test_the_time_budget_stops_a_purge_and_the_next_one_goes_on(task):
    for i in range(10):
        make_run(task, 100 * DAY, slot=i)
    kept = make_run(task, DAY)
    ticks = iter(range(1000))

    def clock() -> float:  # one unit per look
        return float(next(ticks))

    budget = Pacing(2, clock() + 2, clock=clock)
    first = purge_task_runs(NOW, retention_days=90, pacing=budget)

    assert (first.deleted, first.complete) == (4, False)
    assert TaskRun.objects.count() == 7
    rest = purge_task_runs(NOW, retention_days=90, pacing=pacing(2))
    assert rest.deleted == 6 and ids(TaskRun) == {kept.pk}


@pytest.mark.django_db
def test_every_table_gets_a_batch_when_the_budget_is_spent(task):
    for i in range(4):
        make_run(task, 100 * DAY, slot=i)
    AuditEntry.objects.update(created_at=NOW - 400 * DAY)
    spent = Pacing(2, float("-inf"))  # the deadline passed before the purge began

    purged = purge_history(NOW, spent)

    assert purged["task_runs_purged"] == 2 and purged["audit_entries_purged"] > 0


# ----------------------------------------------------------------------------- interruptions


class Killed(Exception):
    """The worker running the purge dies."""


@pytest.mark.django_db(transaction=True)
def test_a_purge_killed_between_batches_keeps_what_it_must(task):
    old = [make_run(task, 100 * DAY, slot=i) for i in range(9)]
    keep = [make_run(task, DAY), make_run(task, 100 * DAY, "doing", slot=100)]
    looks = 0

    def dies_after_two_batches() -> bool:
        nonlocal looks
        looks += 1
        if looks == 3:
            raise Killed
        return False

    with pytest.raises(Killed):
        purge_task_runs(NOW, retention_days=90, pacing=pacing(3, stop_if=dies_after_two_batches))

    left = ids(TaskRun)
    assert {r.pk for r in keep} <= left and len(left - {r.pk for r in keep}) == 3
    purge_task_runs(NOW, retention_days=90, pacing=pacing(3))
    assert ids(TaskRun) == {r.pk for r in keep} and not ids(TaskRun) & {r.pk for r in old}


@pytest.mark.django_db(transaction=True)
def test_a_batch_cut_off_midway_deletes_nothing(task):
    """The server cancels the statement while it deletes: its batch rolls back whole."""
    when = [NOW - 100 * DAY - dt.timedelta(seconds=i) for i in range(3000)]
    TaskRun.objects.bulk_create(
        TaskRun(task=task, tenant=task.tenant, scheduled_for=t, enqueued_at=t, status="succeeded")
        for t in when
    )
    keep = make_run(task, DAY)
    sql("SET statement_timeout = 1")
    try:
        with pytest.raises(DatabaseError, match="statement timeout"):
            purge_task_runs(NOW, retention_days=90, pacing=pacing(3000))
    finally:
        sql("SET statement_timeout = 0")
    assert TaskRun.objects.count() == 3001
    purge_task_runs(NOW, retention_days=90, pacing=pacing(3000))
    assert ids(TaskRun) == {keep.pk}


# ----------------------------------------------------------------------------- making way


def defer_tick() -> int:
    return app.configure_task("scheduler").defer(timestamp=int(NOW.timestamp()))


def set_job(job_id: int, status: str) -> None:
    """What a worker does to a job it takes (with its worker id) or finishes."""
    sql("INSERT INTO procrastinate_workers DEFAULT VALUES")
    sql(
        "UPDATE procrastinate_jobs SET status = %s, "
        "worker_id = (SELECT max(id) FROM procrastinate_workers) WHERE id = %s",
        [status, job_id],
    )


def making_way(**options) -> Pacing:
    """The maintenance job's pacing, with a long budget."""
    return pacing(stop_if=tick_waiting, pause_while=tick_running, **options)


@pytest.mark.django_db(transaction=True)
def test_a_purge_ends_when_a_tick_waits_for_its_worker(task, clean_jobs):
    old = make_run(task, 100 * DAY)
    app.configure_task("tests.add", queue=task.tenant.queue_name).defer(a=1, b=2)
    maintenance = app.configure_task("metronome.maintenance").defer(timestamp=1)
    set_job(maintenance, "doing")  # the purge's own job
    assert not tick_waiting() and not tick_running()  # neither is a reason to stop

    tick = defer_tick()
    stopped = purge_task_runs(NOW, retention_days=90, pacing=making_way())
    assert (stopped.batches, stopped.complete) == (0, False)
    assert TaskRun.objects.filter(pk=old.pk).exists()

    set_job(tick, "succeeded")
    assert purge_task_runs(NOW, retention_days=90, pacing=making_way()).deleted == 1


@pytest.mark.django_db(transaction=True)
def test_a_purge_pauses_while_a_tick_runs_elsewhere(task, clean_jobs):
    old = make_run(task, 100 * DAY)
    tick = defer_tick()
    set_job(tick, "doing")  # another worker took it
    pauses: list[float] = []

    def tick_ends_meanwhile(seconds: float) -> None:
        pauses.append(seconds)
        assert TaskRun.objects.filter(pk=old.pk).exists()  # nothing deleted beside the tick
        set_job(tick, "succeeded")

    result = purge_task_runs(NOW, retention_days=90, pacing=making_way(sleep=tick_ends_meanwhile))

    assert len(pauses) == 1 and result.deleted == 1


@pytest.mark.django_db(transaction=True)
def test_a_purge_paused_past_its_budget_ends_without_deleting(task, clean_jobs):
    old = make_run(task, 100 * DAY)
    set_job(defer_tick(), "doing")
    looks = iter(range(100))
    budget = Pacing(
        1000,
        deadline=3,
        clock=lambda: float(next(looks)),
        stop_if=tick_waiting,
        pause_while=tick_running,
        sleep=lambda seconds: None,
    )
    result = purge_task_runs(NOW, retention_days=90, pacing=budget)
    assert (result.batches, result.complete) == (0, False)
    assert TaskRun.objects.filter(pk=old.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_takes_the_tick_before_the_maintenance_job(run_worker):
    maintenance = app.configure_task("metronome.maintenance").defer(timestamp=int(time.time()))
    tick = defer_tick()  # deferred second, taken first
    run_worker(queues=["scheduler"], concurrency=1)
    started = dict(
        ProcrastinateJob.objects.filter(id__in=[maintenance, tick]).values_list("id", "status")
    )
    assert started == {maintenance: "succeeded", tick: "succeeded"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT job_id FROM procrastinate_events WHERE type = 'started' ORDER BY id")
        assert [row[0] for row in cursor.fetchall()] == [tick, maintenance]


@pytest.mark.django_db(transaction=True)
def test_the_maintenance_job_purges_old_history(run_worker, task, settings):
    old = make_run(task, 100 * DAY)
    recent = make_run(task, DAY)
    AuditEntry.objects.update(created_at=dt.datetime.now(UTC) - 400 * DAY)
    fresh = AuditEntry.objects.create(action="change", model="task", object_id="1")
    sql("UPDATE scheduler_taskrun SET enqueued_at = now() - %s WHERE id = %s", [100 * DAY, old.pk])
    sql("UPDATE scheduler_taskrun SET enqueued_at = now() - %s WHERE id = %s", [DAY, recent.pk])
    settings.TASKRUN_RETENTION_DAYS = 90
    settings.AUDIT_RETENTION_DAYS = 365

    job = app.configure_task("metronome.maintenance").defer(timestamp=int(time.time()))
    run_worker(queues=["scheduler"])

    assert ProcrastinateJob.objects.get(id=job).status == "succeeded"
    assert ids(TaskRun) == {recent.pk} and ids(AuditEntry) == {fresh.pk}


# ----------------------------------------------------------------------------- settings


def problems() -> list[tuple[str, str]]:
    found = [*check_retention_settings(), *check_audit_retention()]
    return [(m.id, m.msg) for m in found]


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("TASKRUN_RETENTION_DAYS", -1, "scheduler.E002"),
        ("TASKRUN_RETENTION_DAYS", "90", "scheduler.E002"),
        ("TASKRUN_RETENTION_DAYS", 3, "scheduler.E003"),  # jobs are kept 7 days
        ("AUDIT_RETENTION_DAYS", -5, "audit.E001"),
        ("AUDIT_RETENTION_DAYS", 1.5, "audit.E001"),
        ("RETENTION_BATCH_SIZE", 0, "scheduler.E004"),
        ("RETENTION_BATCH_SIZE", 1_000_000, "scheduler.E004"),
        ("RETENTION_BUDGET_SECONDS", 0, "scheduler.E004"),
        ("RETENTION_BUDGET_SECONDS", 3600, "scheduler.E004"),
    ],
)
def test_a_bad_retention_setting_is_a_start_up_error(settings, name, value, check_id):
    settings.JOB_RETENTION_HOURS = 168
    assert problems() == []
    setattr(settings, name, value)
    [(found, message)] = problems()
    assert found == check_id and name in message


def test_retention_forever_and_long_job_retention_pass(settings):
    settings.TASKRUN_RETENTION_DAYS = 0
    settings.AUDIT_RETENTION_DAYS = 0
    settings.JOB_RETENTION_HOURS = 24 * 1000
    assert problems() == []
    settings.TASKRUN_RETENTION_DAYS = 1000
    assert problems() == []


def manage_check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=60,
    )


def test_bad_environment_values_stop_manage_py_with_the_fix():
    not_a_number = manage_check(TASKRUN_RETENTION_DAYS="ninety")
    assert not_a_number.returncode != 0 and "Traceback" not in not_a_number.stderr
    assert "TASKRUN_RETENTION_DAYS='ninety' is not a whole number" in not_a_number.stderr

    too_short = manage_check(TASKRUN_RETENTION_DAYS="2", JOB_RETENTION_HOURS="168")
    assert too_short.returncode != 0 and "scheduler.E003" in too_short.stderr
    assert "TASKRUN_RETENTION_DAYS to 7 or more" in too_short.stderr

    assert manage_check(TASKRUN_RETENTION_DAYS="7", AUDIT_RETENTION_DAYS="0").returncode == 0
