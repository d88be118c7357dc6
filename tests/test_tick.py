"""Issue 3: the scheduler tick and the periodic ``scheduler`` job."""

from __future__ import annotations

import datetime as dt

import pytest
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler import tick as tick_module
from scheduler.cron import period_to_cron
from scheduler.models import Task, TaskRun
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

    monkeypatch.setattr(tick_module.jobs, "advance_tasks", explode)
    with pytest.raises(RuntimeError):
        run_tick(T0)

    assert not TaskRun.objects.exists()
    assert not ProcrastinateJob.objects.exists()
    task.refresh_from_db()
    assert task.next_run_at == T0


def test_scheduler_job_is_periodic_on_queue_scheduler():
    periodic = [
        p for (name, _), p in app.periodic_registry.periodic_tasks.items() if name == "scheduler"
    ]
    assert len(periodic) == 1
    assert periodic[0].task.queue == "scheduler"
    assert periodic[0].cron == "* * * * *"


@pytest.mark.parametrize(
    ("seconds", "cron"),
    [(60, "* * * * *"), (10, "* * * * * */10"), (1, "* * * * * */1"), (300, "*/5 * * * *")],
)
def test_period_to_cron(seconds, cron):
    assert period_to_cron(seconds) == cron


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
