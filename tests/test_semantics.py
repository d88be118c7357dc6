"""Scheduling semantics, on a simulated clock against real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext, override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

from scheduler.models import SchedulerTick, Task, TaskRun
from scheduler.runs import run_now
from scheduler.tick import run_tick
from tenants.models import Tenant

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIN = dt.timedelta(minutes=1)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _clean(clean_jobs):
    """Every test here starts with empty procrastinate tables."""


def runs_of(task: Task) -> list[dt.datetime]:
    return sorted(TaskRun.objects.filter(task=task).values_list("scheduled_for", flat=True))


# 1. Exactly once --------------------------------------------------------------------


def test_concurrent_ticks_defer_each_due_task_once(probe_task):
    tasks = [probe_task(now=T0 - MIN) for _ in range(30)]
    barrier = threading.Barrier(4)
    errors = []

    def tick():
        try:
            barrier.wait()
            run_tick(T0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert TaskRun.objects.count() == 30
    assert ProcrastinateJob.objects.count() == 30
    for task in tasks:
        assert runs_of(task) == [T0]


def test_a_stale_edit_never_rewinds_the_schedule(probe_task):
    task = probe_task(now=T0 - MIN)
    stale = Task.objects.get(pk=task.pk)  # loaded before the tick: next_run_at == T0
    run_tick(T0)
    stale.kwargs = {"fail_first": 0}
    stale.save()
    task.refresh_from_db()
    assert task.next_run_at == T0 + MIN
    run_tick(T0 + dt.timedelta(seconds=30))
    assert runs_of(task) == [T0]


def test_a_tick_that_already_ran_is_never_deferred_again(probe_task):
    task = probe_task(now=T0 - MIN)
    run_tick(T0)
    Task.objects.filter(pk=task.pk).update(next_run_at=T0)  # e.g. an edit racing the tick
    result = run_tick(T0)
    assert result.deferred == []
    assert runs_of(task) == [T0]
    task.refresh_from_db()
    assert task.next_run_at == T0 + MIN


def test_tick_query_count_does_not_grow_with_due_tasks(probe_task):
    for _ in range(3):
        probe_task(now=T0 - MIN, overlap="skip")
    with CaptureQueriesContext(connection) as few:
        assert len(run_tick(T0).deferred) == 3
    for _ in range(40):
        probe_task(now=T0, overlap="skip")
    with CaptureQueriesContext(connection) as many:
        # the first three still have a queued run: skipped by their overlap policy
        assert len(run_tick(T0 + MIN).deferred) == 40
    assert len(many.captured_queries) == len(few.captured_queries)


# 2. Missed runs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected_runs", "missed"),
    [
        ("skip", [T0 + 10 * MIN], 10),
        ("latest", [T0 + 10 * MIN], 10),
        ("all", [T0 + i * MIN for i in range(11)], 0),
    ],
)
def test_catchup_after_downtime(probe_task, policy, expected_runs, missed):
    task = probe_task(now=T0 - MIN, catchup=policy, overlap="allow")
    run_tick(T0 + 10 * MIN)  # the scheduler was down from T0 to T0+10
    assert runs_of(task) == expected_runs
    task.refresh_from_db()
    assert task.missed_count == missed
    assert task.next_run_at == T0 + 11 * MIN
    jobs = ProcrastinateJob.objects.order_by("id")
    assert [j.args["scheduled_for"] for j in jobs] == [t.isoformat() for t in expected_runs]


def test_skip_policy_does_not_run_a_late_tick(probe_task):
    task = probe_task("0 * * * *", now=T0 - MIN, catchup="skip")
    run_tick(T0 + 5 * MIN)  # the 12:00 tick, seen only at 12:05
    assert runs_of(task) == []
    task.refresh_from_db()
    assert task.missed_count == 1 and task.next_run_at == T0 + 60 * MIN


def test_catchup_all_is_capped_by_window_and_count(probe_task):
    task = probe_task(
        now=T0 - MIN,
        catchup="all",
        overlap="allow",
        catchup_window=dt.timedelta(minutes=30),
        catchup_max=5,
    )
    run_tick(T0 + 120 * MIN)
    assert runs_of(task) == [T0 + i * MIN for i in range(116, 121)]
    task.refresh_from_db()
    assert task.missed_count == 121 - 5


def test_ticks_while_disabled_are_not_missed(probe_task):
    task = probe_task(now=T0 - MIN)
    task.enabled = False
    task.save(now=T0 - MIN)
    task.enabled = True
    task.save(now=T0 + 30 * MIN)  # re-enabled half an hour later
    run_tick(T0 + 31 * MIN)
    task.refresh_from_db()
    assert runs_of(task) == [T0 + 31 * MIN] and task.missed_count == 0


# 3. Overlap -------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "pending"), [("skip", 1), ("buffer_one", 1), ("allow", 60)])
def test_an_hour_without_tenant_workers(probe_task, policy, pending):
    task = probe_task(now=T0 - MIN, overlap=policy)
    for minute in range(60):
        run_tick(T0 + minute * MIN)
    todo = ProcrastinateJob.objects.filter(status="todo").count()
    assert todo == pending
    task.refresh_from_db()
    assert task.skipped_count == 60 - pending
    assert task.missed_count == 0


def test_buffer_one_queues_one_behind_a_running_run(probe_task):
    task = probe_task(now=T0 - MIN, overlap="buffer_one")
    run_tick(T0)
    with connection.cursor() as cursor:  # the first run is now running
        cursor.execute("UPDATE procrastinate_jobs SET status = 'doing'")
    run_tick(T0 + MIN)
    run_tick(T0 + 2 * MIN)
    statuses = sorted(ProcrastinateJob.objects.values_list("status", flat=True))
    assert statuses == ["doing", "todo"]
    task.refresh_from_db()
    assert task.skipped_count == 1


def test_a_run_whose_job_vanished_does_not_block_for_ever(probe_task):
    task = probe_task(now=T0 - MIN, overlap="skip")
    run_tick(T0)
    ProcrastinateJob.objects.all().delete()  # purged or cancelled behind our back
    run_tick(T0 + MIN)
    assert runs_of(task) == [T0, T0 + MIN]
    assert TaskRun.objects.get(scheduled_for=T0).status == "cancelled"


# 4. Time zones ----------------------------------------------------------------------


def test_changing_settings_time_zone_never_moves_a_task_with_its_own_zone(probe_task, tenant):
    task = probe_task("0 9 * * *", now=T0, timezone="Asia/Tokyo")
    with override_settings(TIME_ZONE="America/Los_Angeles"):
        task.kwargs = {}
        task.save(now=T0)
        assert Task.objects.get(pk=task.pk).next_run_at == dt.datetime(2026, 6, 2, 0, tzinfo=UTC)
    tenant.refresh_from_db()
    assert tenant.timezone == "UTC"  # the tenant's zone is stored, not read from settings


@pytest.mark.parametrize(
    ("zone", "day", "counts"),
    [
        # spring forward: 02:30 does not exist -> once at 03:00; */15 loses the gap hour
        (
            "America/New_York",
            dt.date(2026, 3, 8),
            {"30 2 * * *": 1, "30 1 * * *": 1, "*/15 * * * *": 92},
        ),
        (
            "Europe/Berlin",
            dt.date(2026, 3, 29),
            {"30 2 * * *": 1, "30 1 * * *": 1, "*/15 * * * *": 92},
        ),
        # fall back: 01:30 (NY) / 02:30 (Berlin) occur twice -> once; */15 runs the hour once
        (
            "America/New_York",
            dt.date(2026, 11, 1),
            {"30 2 * * *": 1, "30 1 * * *": 1, "*/15 * * * *": 96},
        ),
        (
            "Europe/Berlin",
            dt.date(2026, 10, 25),
            {"30 2 * * *": 1, "30 1 * * *": 1, "*/15 * * * *": 96},
        ),
    ],
)
def test_dst_days_run_each_local_time_once(user, probe_task, zone, day, counts):
    """Tick every 15 minutes through three local days and count runs per local day."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(zone)
    tenant = Tenant.create(user, f"tz-{zone}-{day}", "tz@example.com", timezone=zone)
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(0), tz).astimezone(UTC)
    tasks = {
        cron: probe_task(cron, now=start - MIN, tenant_=tenant, overlap="allow", catchup="skip")
        for cron in counts
    }
    now = start
    end = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(0), tz).astimezone(UTC)
    while now < end:
        run_tick(now)
        now += dt.timedelta(minutes=15)
    for cron, task in tasks.items():
        per_day: dict[dt.date, int] = {}
        for when in runs_of(task):
            local_day = when.astimezone(tz).date()
            per_day[local_day] = per_day.get(local_day, 0) + 1
        assert per_day[day] == counts[cron], (cron, per_day)
        normal = 96 if cron.startswith("*/15") else 1
        assert per_day[day - dt.timedelta(days=1)] == normal
        assert per_day[day + dt.timedelta(days=1)] == normal
        task.refresh_from_db()
        assert task.missed_count == 0, cron


# 6./7. Live edits, pause, run now ---------------------------------------------------


def test_edits_take_effect_at_the_next_tick(probe_task):
    task = probe_task("*/5 * * * *", now=T0 - MIN)
    task.cron = "30 * * * *"
    task.save(now=T0 - MIN)
    run_tick(T0 + 5 * MIN)
    assert runs_of(task) == []
    task.enabled = False
    task.save(now=T0 + 5 * MIN)
    run_tick(T0 + 60 * MIN)
    assert runs_of(task) == []


def test_deleting_a_task_cancels_its_queued_jobs(probe_task):
    task = probe_task(now=T0 - MIN)
    run_tick(T0)
    job_id = TaskRun.objects.get().job_id
    task.delete()
    assert ProcrastinateJob.objects.get(id=job_id).status == "cancelled"


def test_disabling_a_tenant_cancels_its_queued_jobs(probe_task, tenant):
    task = probe_task(now=T0 - MIN)
    run_tick(T0)
    tenant.is_active = False
    tenant.save()
    assert ProcrastinateJob.objects.get().status == "cancelled"
    assert TaskRun.objects.get(task=task).status == "cancelled"
    run_tick(T0 + MIN)
    assert runs_of(task) == [T0]


def test_disabling_a_tenant_cancels_all_its_queued_jobs_in_one_statement(
    probe_task, tenant, django_assert_max_num_queries
):
    tasks = [probe_task(kwargs={"fail_first": -i}, now=T0 - MIN) for i in range(1, 31)]
    run_tick(T0)
    running = TaskRun.objects.filter(task=tasks[0]).values_list("job_id", flat=True)
    ProcrastinateJob.objects.filter(id__in=running).update(status="doing")  # left alone
    with django_assert_max_num_queries(12):  # the tenant's save, then cancelling 29 jobs
        tenant.is_active = False
        tenant.save()
    statuses = dict(ProcrastinateJob.objects.values_list("id", "status"))
    assert sorted(statuses.values()).count("cancelled") == 29
    assert statuses[running[0]] == "doing"


def test_pause_with_end_time_blocks_then_resumes_without_misses(probe_task):
    task = probe_task(now=T0 - MIN, overlap="allow")
    task.pause("maintenance", until=T0 + 3 * MIN, now=T0 - MIN)
    for minute in range(6):
        run_tick(T0 + minute * MIN)
    assert runs_of(task) == [T0 + 3 * MIN, T0 + 4 * MIN, T0 + 5 * MIN]
    task.refresh_from_db()
    assert task.missed_count == 0 and task.pause_note == "maintenance"


def test_pausing_a_tenant_pauses_all_its_tasks(probe_task, tenant):
    first, second = probe_task(now=T0 - MIN), probe_task("*/2 * * * *", now=T0 - MIN)
    tenant.pause("billing", now=T0 - MIN)
    run_tick(T0)
    assert TaskRun.objects.count() == 0
    assert SchedulerTick.objects.get().blocked == 2
    tenant.resume()
    run_tick(T0 + 2 * MIN)
    assert runs_of(first) == [T0 + 2 * MIN] and runs_of(second) == [T0 + 2 * MIN]


def test_pause_end_must_be_in_the_future(probe_task):
    task = probe_task(now=T0)
    with pytest.raises(ValidationError, match="must be in the future"):
        task.pause(until=T0 - MIN, now=T0)


def test_run_now_is_manual_and_obeys_overlap(probe_task):
    task = probe_task("0 0 1 1 *", now=T0, overlap="skip")
    run = run_now(task, now=T0)
    assert run.manual and run.scheduled_for == T0
    assert ProcrastinateJob.objects.get(id=run.job_id).queue_name == task.tenant.queue_name
    with pytest.raises(ValidationError, match="already has a run queued"):
        run_now(task, now=T0 + MIN)
    Task.objects.filter(pk=task.pk).update(overlap="allow")
    assert run_now(task, now=T0 + MIN).manual


# 8. Retries, with a real worker -----------------------------------------------------


def test_retry_policy_each_attempt_visible(run_worker, probe_task, tenant):
    task = probe_task(
        now=T0 - MIN, kwargs={"fail_first": 2}, max_attempts=3, retry_backoff=dt.timedelta(0)
    )
    run_tick(T0)
    run_worker(queues=[tenant.queue_name])
    run = TaskRun.objects.get(task=task)
    assert run.status == "succeeded" and run.attempts == 3
    assert [entry["outcome"] for entry in run.attempt_log] == ["retry", "retry", "succeeded"]
    assert "probe failure on attempt 1" in run.attempt_log[0]["error"]


def test_without_retries_a_failure_is_final(run_worker, probe_task, tenant):
    task = probe_task(now=T0 - MIN, kwargs={"fail_first": 1})
    run_tick(T0)
    run_worker(queues=[tenant.queue_name])
    run = TaskRun.objects.get(task=task)
    assert run.status == "failed" and run.attempts == 1
    assert "RuntimeError: probe failure on attempt 1" in run.error


# 10. Heartbeat ----------------------------------------------------------------------


def test_each_tick_records_what_it_did(probe_task):
    probe_task(now=T0 - MIN, overlap="skip")
    probe_task(now=T0 - 11 * MIN, catchup="latest")
    run_tick(T0 - 10 * MIN)
    run_tick(T0)
    tick = SchedulerTick.objects.first()
    assert tick.tick_time == T0
    assert (tick.due, tick.deferred, tick.skipped, tick.missed) == (2, 1, 1, 9)
    assert tick.finished_at >= tick.started_at


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("catchup", "sometimes", "is not a valid choice"),
        ("overlap", "queue", "is not a valid choice"),
        ("catchup_max", 0, "greater than or equal to 1"),
        ("max_attempts", 0, "greater than or equal to 1"),
        ("catchup_window", dt.timedelta(0), "must be a positive duration"),
        ("retry_backoff", dt.timedelta(seconds=-1), "cannot be negative"),
    ],
)
def test_bad_policy_values_are_rejected(probe_task, field, value, message):
    with pytest.raises(ValidationError) as exc:
        probe_task(**{field: value})
    assert message in " ".join(exc.value.message_dict[field])
    assert not Task.objects.exists()
