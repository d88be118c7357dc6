"""Where the scheduler touches procrastinate's tables; all of its SQL is here.

Everything runs on Django's connection, so it is atomic with the ORM writes around it,
in the web process and inside workers alike.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django.settings import settings as procrastinate_settings
from procrastinate.jobs import Job
from procrastinate.manager import JobManager

from scheduler.models import Task, TaskRun


@dataclass(frozen=True)
class RunToDefer:
    task: Task
    scheduled_for: dt.datetime
    manual: bool = False


def job_for(run: RunToDefer) -> Job:
    task = run.task
    return Job(
        id=None,
        queue=task.tenant.queue_name,
        lock=None,
        queueing_lock=None,
        task_name=task.integration.type.get_task(task.name).procrastinate_name,
        task_kwargs={
            "task_id": task.pk,
            "scheduled_for": run.scheduled_for.isoformat(),
            "integration_id": task.integration_id,
            "kwargs": task.kwargs,
            "retry": task.retry_policy(),
        },
    )


def defer_runs(runs: list[RunToDefer]) -> list[TaskRun]:
    """Insert one job per run and its TaskRun, in the caller's transaction."""
    if not runs:
        return []
    manager = JobManager(
        django_connector.DjangoConnector(alias=procrastinate_settings.DATABASE_ALIAS)
    )
    jobs = manager.batch_defer_jobs([job_for(run) for run in runs])
    return TaskRun.objects.bulk_create(
        TaskRun(
            task=run.task,
            tenant_id=run.task.tenant_id,
            scheduled_for=run.scheduled_for,
            manual=run.manual,
            job_id=job.id,
        )
        for run, job in zip(runs, jobs, strict=True)
    )


@dataclass(frozen=True)
class ActiveRuns:
    queued: Counter[int]  # task id -> runs whose job is todo
    running: Counter[int]  # task id -> runs whose job is doing


_ACTIVE_RUNS_SQL = """
    SELECT r.id, r.task_id, j.status
      FROM scheduler_taskrun r
      LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
     WHERE r.task_id = ANY(%s) AND r.status IN ('todo', 'doing')
"""


def active_runs(task_ids: Iterable[int]) -> ActiveRuns:
    """Runs still queued or running, by the job's own status (the source of truth).

    A TaskRun whose job ended without the worker telling us (cancelled in admin, purged,
    worker killed) is brought in step here, so it can never block a Task for ever.
    """
    queued: Counter[int] = Counter()
    running: Counter[int] = Counter()
    stale: dict[str, list[int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE_RUNS_SQL, [list(task_ids)])
        for run_id, task_id, job_status in cursor.fetchall():
            if job_status == "todo":
                queued[task_id] += 1
            elif job_status in ("doing", "aborting"):
                running[task_id] += 1
            else:
                final = job_status if job_status in TaskRun.Status.values else "cancelled"
                stale.setdefault(final, []).append(run_id)
    for status, ids in stale.items():
        TaskRun.objects.filter(pk__in=ids, status__in=TaskRun.ACTIVE).update(status=status)
    return ActiveRuns(queued=queued, running=running)


def existing_ticks(pairs: Iterable[tuple[int, dt.datetime]]) -> set[tuple[int, dt.datetime]]:
    """Which (task, scheduled_for) pairs already have a run: they are never deferred again."""
    pairs = list(pairs)
    if not pairs:
        return set()
    task_ids = sorted({task_id for task_id, _ in pairs})
    times = sorted({when for _, when in pairs})
    found = TaskRun.objects.filter(task_id__in=task_ids, scheduled_for__in=times).values_list(
        "task_id", "scheduled_for"
    )
    return set(found) & set(pairs)


_ADVANCE_SQL = """
    UPDATE scheduler_task AS t
       SET next_run_at = v.next_run_at,
           last_run_at = COALESCE(v.last_run_at, t.last_run_at),
           missed_count = t.missed_count + v.missed,
           skipped_count = t.skipped_count + v.skipped,
           last_skipped_at = CASE WHEN v.skipped > 0 THEN c.now ELSE t.last_skipped_at END
      FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::int[], %s::int[])
           AS v(id, next_run_at, last_run_at, missed, skipped),
           (SELECT %s::timestamptz AS now) AS c
     WHERE t.id = v.id
"""


@dataclass
class Advance:
    task_id: int
    next_run_at: dt.datetime
    last_run_at: dt.datetime | None = None
    missed: int = 0
    skipped: int = 0


def advance_tasks(advances: list[Advance], now: dt.datetime) -> None:
    """One UPDATE for every due Task (Django's bulk_update is quadratic in PostgreSQL)."""
    if not advances:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _ADVANCE_SQL,
            [
                [a.task_id for a in advances],
                [a.next_run_at for a in advances],
                [a.last_run_at for a in advances],
                [a.missed for a in advances],
                [a.skipped for a in advances],
                now,
            ],
        )


_CANCEL_SQL = """
    SELECT procrastinate_cancel_job_v1(id, false, false)
      FROM unnest(%s::bigint[]) AS id
"""


def cancel_pending_runs(runs: Any) -> int:
    """Cancel the still-``todo`` jobs of these runs (a TaskRun queryset); returns how many."""
    pending = list(runs.filter(status=TaskRun.Status.TODO).values_list("pk", "job_id"))
    job_ids = [job_id for _, job_id in pending if job_id is not None]
    cancelled: list[int] = []
    if job_ids:
        with connection.cursor() as cursor:
            cursor.execute(_CANCEL_SQL, [job_ids])
            cancelled = [row[0] for row in cursor.fetchall() if row[0] is not None]
    TaskRun.objects.filter(job_id__in=cancelled).update(status=TaskRun.Status.CANCELLED)
    return len(cancelled)
