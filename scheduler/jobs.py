"""Where Metronome touches procrastinate's tables: every query on them is in this module,
but for the job priorities of fair sharing (``scheduler.fairness``, which shifts them when
it rebases and reads the next job's priority).

- Jobs are deferred and cancelled through procrastinate's public ``JobManager`` on a
  ``DjangoConnector``, that is on Django's own connection, so they commit or roll back with
  the ORM writes around them, in the web process and inside workers alike. (Inside a
  worker, ``app.job_manager`` runs on the worker's own connection pool, outside the
  caller's transaction: the tick, which runs in a worker, must not use it.)
- Each tenant job gets its priority and lock from :mod:`scheduler.fairness`, which also
  reads waiting jobs' priorities (the virtual time) and shifts them when it rebases.
- Reads use procrastinate's Django models (``ProcrastinateJob``, ``ProcrastinateWorker``),
  or SQL here where they join Metronome's tables.

Elsewhere, procrastinate's tables are only reached through its public API (the maintenance
job, admin's job actions) or by the trigger on ``procrastinate_jobs`` that keeps each
TaskRun in step with its job's status (``scheduler/sql/taskrun_status_trigger.sql``,
installed and checked by :mod:`scheduler.run_records`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Max, Q, QuerySet
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinateWorker
from procrastinate.jobs import Job
from procrastinate.manager import JobManager

from scheduler import fairness
from scheduler.models import TaskRun, WorkerInfo
from scheduler.planner import RunToDefer
from scheduler.queues import SCHEDULER_QUEUE
from tenants.queues import queue_for


def job_manager() -> JobManager:
    """procrastinate's JobManager on Django's connection (``PROCRASTINATE_DATABASE_ALIAS``,
    the database procrastinate's Django app uses, ``default`` unless set)."""
    alias = getattr(settings, "PROCRASTINATE_DATABASE_ALIAS", "default")
    return JobManager(django_connector.DjangoConnector(alias=alias))


def job_for(run: RunToDefer, slot: fairness.Slot | None = None) -> Job:
    """The job of a run, with its fair-share priority and lock (:mod:`scheduler.fairness`)."""
    return Job(
        id=None,
        queue=queue_for(run.tenant_id),
        lock=slot.lock if slot else None,
        queueing_lock=None,
        priority=slot.priority if slot else 0,
        task_name=run.procrastinate_task,
        task_kwargs={
            "task_id": run.task_id,
            "scheduled_for": run.scheduled_for.isoformat(),
            "integration_id": run.integration_id,
            "kwargs": run.kwargs,
            "retry": run.retry,
        },
    )


def fair_slots(runs: Sequence[RunToDefer]) -> list[fairness.Slot]:
    """Each run's Slot; a tenant's runs get increasing passes in ``scheduled_for`` order."""
    order = sorted(range(len(runs)), key=lambda i: runs[i].scheduled_for)
    slots = fairness.assign([runs[i].tenant_id for i in order])
    by_run = dict(zip(order, slots, strict=True))
    return [by_run[i] for i in range(len(runs))]


def defer_jobs(runs: Sequence[RunToDefer]) -> list[int]:
    """Insert one job per run, in the caller's transaction; the job ids, in order."""
    if not runs:
        return []
    jobs = [job_for(run, slot) for run, slot in zip(runs, fair_slots(runs), strict=True)]
    deferred = job_manager().batch_defer_jobs(jobs)
    return [job.id for job in deferred if job.id is not None]  # procrastinate sets every id


def defer_for_tenant(tenant_id: int, task_name: str, task_kwargs: dict[str, Any]) -> int:
    """Defer one job of ``task_name`` into the tenant's queue with its fair-share priority
    and lock, on Django's connection (in the caller's transaction, if any); its id."""
    (slot,) = fairness.assign([tenant_id])
    job = Job(
        id=None,
        queue=queue_for(tenant_id),
        lock=slot.lock,
        queueing_lock=None,
        priority=slot.priority,
        task_name=task_name,
        task_kwargs=task_kwargs,
    )
    (deferred,) = job_manager().batch_defer_jobs([job])
    assert deferred.id is not None  # procrastinate sets it
    return deferred.id


def cancel_jobs(job_ids: Iterable[int]) -> int:
    """Cancel these jobs if they are still ``todo``; returns how many were cancelled."""
    manager = job_manager()
    return sum(manager.cancel_job_by_id(job_id) for job_id in job_ids)


def cancel_pending_runs(runs: QuerySet[TaskRun]) -> int:
    """Cancel the still-``todo`` jobs of these runs (a TaskRun queryset); returns how many.

    Their TaskRuns follow the jobs' status (the trigger)."""
    pending = runs.filter(status=TaskRun.Status.TODO).values_list("job_id", flat=True)
    return cancel_jobs(job_id for job_id in pending if job_id is not None)


_RUN_JOB_STATUS_SQL = """
    SELECT r.id, r.task_id, j.status
      FROM scheduler_taskrun r
      LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
     WHERE r.task_id = ANY(%s) AND r.status IN ('todo', 'doing')
"""


def run_job_statuses(task_ids: Sequence[int]) -> list[tuple[int, int, str | None]]:
    """(run id, task id, its job's status) of these Tasks' runs still ``todo`` or ``doing``;
    the job's status is None when the job is gone (purged)."""
    with connection.cursor() as cursor:
        cursor.execute(_RUN_JOB_STATUS_SQL, [list(task_ids)])
        return cursor.fetchall()


def job_counts(queues: Sequence[str] | None = None) -> list[tuple[str, str, int]]:
    """(queue, status, number of jobs), for these queues or all of them."""
    jobs = ProcrastinateJob.objects.all()
    if queues is not None:
        jobs = jobs.filter(queue_name__in=list(queues))
    rows = jobs.order_by().values_list("queue_name", "status").annotate(count=Count("id"))
    return [(queue, str(status), count) for queue, status, count in rows]


def worker_heartbeats() -> list[tuple[int, dt.datetime]]:
    """(worker id, last heartbeat) of every worker procrastinate knows, by id."""
    return list(ProcrastinateWorker.objects.order_by("id").values_list("id", "last_heartbeat"))


def scheduler_worker_heartbeat() -> dt.datetime | None:
    """The latest heartbeat of a worker serving queue ``scheduler`` (all-queue ones included)."""
    serving = WorkerInfo.objects.filter(Q(queues__isnull=True) | Q(queues__has_key=SCHEDULER_QUEUE))
    found = ProcrastinateWorker.objects.filter(id__in=serving.values("id"))
    return found.aggregate(latest=Max("last_heartbeat"))["latest"]


_FORGET_PRUNED_WORKERS_SQL = """
    DELETE FROM scheduler_workerinfo w
     WHERE NOT EXISTS (SELECT 1 FROM procrastinate_workers p WHERE p.id = w.id)
"""


def forget_pruned_workers() -> None:
    """Delete the WorkerInfo rows of workers procrastinate no longer lists (one statement)."""
    with connection.cursor() as cursor:
        cursor.execute(_FORGET_PRUNED_WORKERS_SQL)


@dataclass(frozen=True)
class TenantLoad:
    """A tenant's share settings and what its queue holds now: the figures of fair sharing.

    ``todo`` counts every job not yet started (as the per-queue job counts do);
    ``waiting_since`` is when the longest-waiting of those already due became due
    (deferred, or reached its ``scheduled_at``), None when none is due.
    """

    tenant_id: int
    name: str
    weight: int
    max_running: int | None
    todo: int
    doing: int
    waiting_since: dt.datetime | None

    def oldest_wait(self, now: dt.datetime) -> dt.timedelta | None:
        """How long the longest-waiting due job has waited at ``now`` (never negative)."""
        if self.waiting_since is None:
            return None
        return max(now - self.waiting_since, dt.timedelta(0))


_TENANT_LOAD_SQL = """
    SELECT t.id, t.name, t.weight, t.max_running,
           coalesce(l.todo, 0), coalesce(l.doing, 0), l.waiting_since
      FROM tenants_tenant t
      LEFT JOIN (
            SELECT j.queue_name,
                   count(*) FILTER (WHERE j.status = 'todo') AS todo,
                   count(*) FILTER (WHERE j.status = 'doing') AS doing,
                   min(GREATEST(j.scheduled_at, d.at)) FILTER (
                       WHERE j.status = 'todo'
                         AND (j.scheduled_at IS NULL OR j.scheduled_at <= %(now)s)
                   ) AS waiting_since
              FROM procrastinate_jobs j
              LEFT JOIN LATERAL (
                    SELECT min(e.at) AS at FROM procrastinate_events e
                     WHERE e.job_id = j.id AND e.type = 'deferred' AND j.status = 'todo'
                   ) d ON true
             WHERE j.status IN ('todo', 'doing')
               AND (%(all)s OR j.queue_name = ANY(%(queues)s))
             GROUP BY j.queue_name
           ) l ON l.queue_name = t.id::text
     WHERE %(all)s OR t.id = ANY(%(ids)s)
     ORDER BY t.name, t.id
"""


def tenant_load(tenant_ids: Iterable[int] | None, now: dt.datetime) -> dict[int, TenantLoad]:
    """Each of these tenants' (None: every tenant's) share settings and queue load, by name,
    in one query; an empty queue has a zero load. ``now`` decides which jobs are due."""
    ids = None if tenant_ids is None else list(tenant_ids)
    if ids == []:
        return {}
    queues = [queue_for(tenant_id) for tenant_id in ids or []]
    with connection.cursor() as cursor:
        cursor.execute(
            _TENANT_LOAD_SQL, {"now": now, "all": ids is None, "ids": ids or [], "queues": queues}
        )
        return {row[0]: TenantLoad(*row) for row in cursor.fetchall()}
