"""The scheduler tick, and the periodic ``scheduler`` job that runs it on queue ``scheduler``."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from croniter import croniter
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.periodic import PeriodicDeferrer

from integrations.models import Integration
from scheduler import tick as tick_module
from scheduler.checks import check_tick_settings
from scheduler.cron import period_to_cron
from scheduler.models import SchedulerTick, Task, TaskRun
from scheduler.tick import run_tick
from tenants.models import Tenant

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def github_task(tenant: Tenant, cron: str = "* * * * *", now: dt.datetime = T0, **options) -> Task:
    integration, _ = Integration.objects.get_or_create(name="github", tenant=tenant)
    task = Task(integration=integration, name="get_users", cron=cron, **options)
    task.save(now=now)
    return task


@pytest.mark.django_db(transaction=True)
def test_tick_defers_only_due_enabled_tasks_and_advances_them(clean_jobs, tenant, other_tenant):
    due = github_task(tenant, "*/5 * * * *", now=T0 - dt.timedelta(minutes=1))  # due 12:00
    later = github_task(tenant, "0 13 * * *")  # due 13:00
    disabled = github_task(tenant, "* * * * *", now=T0 - dt.timedelta(minutes=1), enabled=False)
    inactive_tenant = github_task(other_tenant, "* * * * *", now=T0 - dt.timedelta(minutes=1))
    Tenant.objects.filter(pk=other_tenant.pk).update(is_active=False)

    result = run_tick(T0)

    assert len(result.deferred) == 1
    run = TaskRun.objects.get()
    assert (run.task_id, run.scheduled_for) == (due.id, T0)
    due.refresh_from_db()
    assert due.next_run_at == T0 + dt.timedelta(minutes=5)
    assert due.last_run_at == T0
    for untouched in (later, disabled):
        before = untouched.next_run_at
        untouched.refresh_from_db()
        assert untouched.next_run_at == before
    # A blocked task moves on without a run, and its tick is not a miss.
    inactive_tenant.refresh_from_db()
    assert inactive_tenant.next_run_at == T0 + dt.timedelta(minutes=1)
    assert inactive_tenant.missed_count == 0
    assert ProcrastinateJob.objects.get().queue_name == tenant.queue_name

    # The same tick again finds nothing due: no second run.
    assert run_tick(T0).deferred == []
    assert TaskRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_disabled_integration_gets_no_runs(clean_jobs, tenant):
    task = github_task(tenant, now=T0 - dt.timedelta(minutes=1))
    Integration.objects.filter(pk=task.integration_id).update(enabled=False)
    assert run_tick(T0).deferred == []


@pytest.mark.django_db(transaction=True)
def test_tick_is_one_transaction(clean_jobs, tenant, monkeypatch):
    """A failure after the jobs and runs are inserted leaves no run, no job, no change."""
    task = github_task(tenant, now=T0 - dt.timedelta(minutes=1))

    def explode(tasks, now):
        raise RuntimeError("crash between writes")

    monkeypatch.setattr(tick_module.tick_store, "advance_tasks", explode)
    with pytest.raises(RuntimeError):
        run_tick(T0)

    assert not TaskRun.objects.exists()
    assert not ProcrastinateJob.objects.exists()
    task.refresh_from_db()
    assert task.next_run_at == T0


def test_the_periodic_deferrer_queues_the_tick_for_scheduler_workers_only(
    run_worker, tenant, other_tenant
):
    """What every worker's periodic deferrer does at a tick: one ``scheduler`` job on queue
    ``scheduler``, for that tick's time, which a tenant worker leaves alone and a scheduler
    worker turns into the due Task's run."""
    task = github_task(tenant, now=T0 - dt.timedelta(minutes=1))
    deferrer = PeriodicDeferrer(registry=app.periodic_registry)
    # The deferrer's clock one second after T0 (on the hour: a tick of every period).
    due_ticks = deferrer.get_previous_tasks(at=T0.timestamp() + 1)
    asyncio.run(deferrer.defer_jobs(due_ticks))

    job = ProcrastinateJob.objects.get(task_name="scheduler")
    assert (job.queue_name, job.args, job.status) == (
        "scheduler",
        {"timestamp": int(T0.timestamp())},
        "todo",
    )

    run_worker(queues=[tenant.queue_name, other_tenant.queue_name])
    assert ProcrastinateJob.objects.get(pk=job.pk).status == "todo"
    assert not TaskRun.objects.exists()

    run_worker(queues=["scheduler"])
    assert ProcrastinateJob.objects.get(pk=job.pk).status == "succeeded"
    run = TaskRun.objects.get()
    assert (run.task_id, run.scheduled_for) == (task.id, T0)
    assert SchedulerTick.objects.get().tick_time == T0


@pytest.mark.parametrize("seconds", [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 900, 1800, 3600])
def test_the_periodic_cron_fires_once_every_period(seconds):
    """Read as procrastinate's periodic deferrer reads it: one tick every ``seconds``,
    on multiples of the period, so that every worker computes the same tick times."""
    reader = croniter(period_to_cron(seconds), T0 - dt.timedelta(microseconds=1))
    ticks = [reader.get_next(dt.datetime) for _ in range(5)]
    assert ticks == [T0 + dt.timedelta(seconds=seconds * i) for i in range(5)]


@pytest.mark.parametrize("seconds", [7, 0, 90, 420])
def test_unsupported_period_is_explained(seconds):
    with pytest.raises(ValueError, match="divisor of 60 seconds"):
        period_to_cron(seconds)


def test_scheduler_worker_runs_the_tick_from_the_periodic_timestamp(run_worker, tenant):
    """The real path: a worker on queue `scheduler` executes the job procrastinate defers."""
    task = github_task(tenant, now=T0 - dt.timedelta(minutes=1))
    app.configure_task("scheduler").defer(timestamp=int(T0.timestamp()))

    run_worker(queues=["scheduler"])

    scheduler_job = ProcrastinateJob.objects.get(task_name="scheduler")
    assert scheduler_job.status == "succeeded"
    run = TaskRun.objects.get()
    assert (run.task_id, run.scheduled_for, run.status) == (task.id, T0, "todo")
    job = ProcrastinateJob.objects.get(task_name="github.get_users")
    assert (job.queue_name, job.status, job.id) == (tenant.queue_name, "todo", run.job_id)


@pytest.mark.parametrize("size", [0, -5, 50_001, "1000"])
def test_a_chunk_size_out_of_range_stops_start_up(settings, size):
    settings.SCHEDULER_CHUNK_SIZE = size
    (error,) = check_tick_settings()
    assert error.id == "scheduler.E005" and "SCHEDULER_CHUNK_SIZE" in error.msg


@pytest.mark.parametrize("threads", [0, 9, True])
def test_tick_threads_out_of_range_stop_start_up(settings, threads):
    settings.SCHEDULER_TICK_THREADS = threads
    (error,) = check_tick_settings()
    assert error.id == "scheduler.E006" and "SCHEDULER_TICK_THREADS" in error.msg


def test_the_default_tick_settings_pass_the_check(settings):
    assert check_tick_settings() == []
