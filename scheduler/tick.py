"""One scheduler tick: turn every due Task into a job on its tenant's queue.

The whole tick is one transaction on Django's connection: the TaskRun rows, the
procrastinate job rows and the ``next_run_at`` updates commit together or not at all.
That is why jobs are deferred through a JobManager on Django's connection rather than
through the worker's own pool (which would commit separately). Due Tasks are locked
with ``FOR UPDATE SKIP LOCKED``, so concurrent ticks never take the same Task, and the
unique (task, scheduled_for) constraint on TaskRun makes a duplicate run impossible.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import transaction
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django.settings import settings as procrastinate_settings
from procrastinate.jobs import Job
from procrastinate.manager import JobManager

from scheduler.cron import next_fire
from scheduler.models import Task, TaskRun

logger = logging.getLogger(__name__)


@dataclass
class TickResult:
    now: dt.datetime
    deferred: list[int] = field(default_factory=list)  # TaskRun ids
    skipped_unknown: list[int] = field(default_factory=list)  # Task ids

    def as_dict(self) -> dict[str, object]:
        return {
            "now": self.now.isoformat(),
            "deferred": len(self.deferred),
            "skipped_unknown": self.skipped_unknown,
        }


def run_tick(now: dt.datetime) -> TickResult:
    """Defer one job per Task due at ``now`` (the tick's time, not the clock's)."""
    result = TickResult(now=now)
    with transaction.atomic():
        due = lock_due_tasks(now)
        runnable = [task for task in due if task_spec(task, result) is not None]
        runs = create_runs(runnable)
        defer_jobs(runs)
        advance_schedules(due, now)
    result.deferred = [run.pk for run in runs]
    if due:
        logger.info("tick %s: deferred %d run(s)", now.isoformat(), len(runs))
    return result


def lock_due_tasks(now: dt.datetime) -> list[Task]:
    return list(
        Task.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(
            enabled=True,
            next_run_at__lte=now,
            integration__enabled=True,
            tenant__is_active=True,
        )
        .select_related("integration", "tenant")
        .order_by("next_run_at", "id")
    )


def task_spec(task: Task, result: TickResult):
    """The integration task to run, or None (logged) when its code no longer exists."""
    try:
        return task.integration.type.get_task(task.name)
    except Exception as exc:  # ValidationError: type or task removed from the code
        logger.warning(
            "task %s skipped: %s", task.pk, "; ".join(getattr(exc, "messages", [str(exc)]))
        )
        result.skipped_unknown.append(task.pk)
        return None


def create_runs(tasks: list[Task]) -> list[TaskRun]:
    runs = [
        TaskRun(task=task, tenant_id=task.tenant_id, scheduled_for=task.next_run_at)
        for task in tasks
    ]
    return TaskRun.objects.bulk_create(runs)


def defer_jobs(runs: list[TaskRun]) -> None:
    """Insert the jobs on Django's connection (same transaction) and link them to runs."""
    if not runs:
        return
    jobs = [
        Job(
            id=None,
            queue=run.task.tenant.queue_name,
            lock=None,
            queueing_lock=None,
            task_name=run.task.integration.type.get_task(run.task.name).procrastinate_name,
            task_kwargs={
                "task_id": run.task_id,
                "run_id": run.pk,
                "scheduled_for": run.scheduled_for.isoformat(),
                "integration_id": run.task.integration_id,
                "kwargs": run.task.kwargs,
            },
        )
        for run in runs
    ]
    manager = JobManager(
        django_connector.DjangoConnector(alias=procrastinate_settings.DATABASE_ALIAS)
    )
    deferred = manager.batch_defer_jobs(jobs)
    for run, job in zip(runs, deferred, strict=True):
        run.job_id = job.id
    TaskRun.objects.bulk_update(runs, ["job_id"])


def advance_schedules(tasks: list[Task], now: dt.datetime) -> None:
    for task in tasks:
        task.last_run_at = task.next_run_at
        task.next_run_at = next_fire(task.cron, now, task.effective_timezone)
    Task.objects.bulk_update(tasks, ["last_run_at", "next_run_at"])
