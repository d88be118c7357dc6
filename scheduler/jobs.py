"""Where Metronome touches procrastinate's tables: every query on them is in this module,
but for the job priorities of fair sharing (``scheduler.fairness``, which shifts them when
it rebases and reads the next job's priority) and the retention purge's reads
(``scheduler.retention``: whether a tick waits or runs, whether a run's job still exists).

- Jobs are deferred through procrastinate's versioned SQL function
  (``procrastinate_defer_jobs_v1``, the one its own ``JobManager`` calls), with rows built in
  the database from one JSON document, and cancelled through its public ``JobManager`` on a
  ``DjangoConnector``: both on Django's own connection, so they commit or roll back with
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
from django.db import connection, transaction
from django.db.models import Count, Max, Q, QuerySet
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinateWorker
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from procrastinate.manager import JobManager

from scheduler import fairness, sql
from scheduler.models import TaskRun, WorkerInfo
from scheduler.planner import RunToDefer
from scheduler.queues import SCHEDULER_QUEUE
from tenants.queues import queue_for


def job_manager() -> JobManager:
    """procrastinate's JobManager on Django's connection (``PROCRASTINATE_DATABASE_ALIAS``,
    the database procrastinate's Django app uses, ``default`` unless set)."""
    alias = getattr(settings, "PROCRASTINATE_DATABASE_ALIAS", "default")
    return JobManager(django_connector.DjangoConnector(alias=alias))


#: The jobs to defer, one JSON object each (see :func:`job_rows`); ``ord`` is 1..n.
_WANTED_CTE = """
    wanted AS (
        SELECT * FROM jsonb_to_recordset(%(jobs)s::jsonb)
            AS w(ord bigint, tenant_id bigint, queue_name text, task_name text, args jsonb,
                 task_id bigint, scheduled_for timestamptz, manual boolean)
    )
"""

#: The jobs themselves, built in the database (no client-side composite values) and
#: inserted by procrastinate's versioned SQL API; ``deferred(ord, job_id)``.
#: ``procrastinate_defer_jobs_v1`` returns the ids in the order of its array.
_DEFERRED_CTE = """
    deferred AS (
        SELECT d.ord, d.job_id
          FROM unnest(procrastinate_defer_jobs_v1(ARRAY(
                   SELECT ROW(w.queue_name, w.task_name, p.priority, p.lock, NULL, w.args,
                              NULL)::procrastinate_job_to_defer_v1
                     FROM wanted w JOIN placed p USING (ord)
                    ORDER BY w.ord
               ))) WITH ORDINALITY AS d(job_id, ord)
    )
"""


def fair_defer_sql(tail: str) -> str:
    """A statement that defers the jobs of the ``%(jobs)s`` parameter (:func:`job_rows`),
    each with its fair-share priority and lock (:data:`scheduler.fairness.PLACEMENT_CTES`),
    then runs ``tail``: more CTEs (each starting with a comma) and the final statement,
    which may read ``wanted``, ``placed`` and ``deferred``. One round trip in all."""
    return f"WITH {_WANTED_CTE}, {fairness.PLACEMENT_CTES}, {_DEFERRED_CTE} {tail}"


def job_rows(jobs: Iterable[tuple[int, str, dict[str, Any]]]) -> str:
    """The ``%(jobs)s`` parameter of :func:`fair_defer_sql`: (tenant id, procrastinate task,
    its kwargs) per job, in order."""
    return sql.json_rows(
        {
            "ord": ord_,
            "tenant_id": tenant_id,
            "queue_name": queue_for(tenant_id),
            "task_name": task_name,
            "args": args,
        }
        for ord_, (tenant_id, task_name, args) in enumerate(jobs, start=1)
    )


def run_rows(runs: Sequence[RunToDefer]) -> str:
    """The ``%(jobs)s`` parameter of :func:`fair_defer_sql` for the jobs of these runs, in
    order, with each run's own columns (``task_id``, ``scheduled_for``, ``manual``).

    A run's job gets as arguments its Task, intended time (ISO 8601), integration, the
    Task's kwargs and its retry policy (what ``integrations.base.tasks`` reads)."""
    rows = []
    for ord_, run in enumerate(runs, start=1):
        when = run.scheduled_for  # ISO 8601 in the document (sql.json_rows)
        rows.append(
            {
                "ord": ord_,
                "tenant_id": run.tenant_id,
                "queue_name": queue_for(run.tenant_id),
                "task_name": run.procrastinate_task,
                "args": {
                    "task_id": run.task_id,
                    "scheduled_for": when,
                    "integration_id": run.integration_id,
                    "kwargs": run.kwargs,
                    "retry": run.retry,
                },
                "task_id": run.task_id,
                "scheduled_for": when,
                "manual": run.manual,
            }
        )
    return sql.json_rows(rows)


_DEFER_SQL = fair_defer_sql(
    "SELECT job_id, (SELECT max(highest) FROM placed) FROM deferred ORDER BY ord"
)


def defer_for_tenants(jobs: Sequence[tuple[int, str, dict[str, Any]]]) -> list[int]:
    """Defer jobs given as (tenant id, procrastinate task, kwargs), each into its tenant's
    queue with its fair-share priority and lock (a tenant's jobs in the order given), on
    Django's connection (in the caller's transaction, if any); their ids, in order."""
    if not jobs:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_DEFER_SQL, {"jobs": job_rows(jobs)})
        found = cursor.fetchall()
    fairness.after_defer(max(highest for _, highest in found))
    return [job_id for job_id, _ in found]


def defer_for_tenant(tenant_id: int, task_name: str, task_kwargs: dict[str, Any]) -> int:
    """:func:`defer_for_tenants` of one job; its id."""
    (job_id,) = defer_for_tenants([(tenant_id, task_name, task_kwargs)])
    return job_id


# procrastinate's retry counts an attempt (``attempts + 1``), right for a job whose worker
# gave up mid-run, wrong for a failed job, whose attempt its finish already counted: the next
# run would be numbered one too high (1, 3). This takes the extra count back.
_UNCOUNT_RETRY_SQL = """
    UPDATE procrastinate_jobs SET attempts = attempts - 1
     WHERE id = %s AND status = 'todo' AND attempts > 0
"""


def retry_failed_job(job_id: int, when: dt.datetime) -> None:
    """Put a failed job back to ``todo`` to run at ``when``, keeping its count of attempts.

    Its next attempt is numbered one more than the last (in the job list and in its TaskRun's
    attempt log, which the status trigger numbers from the job's count). Both statements run
    in one transaction on Django's connection, so no worker takes the job in between.
    """
    with transaction.atomic():
        job_manager().retry_job_by_id(job_id, retry_at=when)  # its TaskRun follows
        with connection.cursor() as cursor:
            cursor.execute(_UNCOUNT_RETRY_SQL, [job_id])


#: procrastinate's versioned cancel (what ``JobManager.cancel_job_by_id`` calls), for many
#: jobs in one statement.
_CANCEL_SQL = """
    SELECT count(*) FROM unnest(%s::bigint[]) AS j(id)
     WHERE procrastinate_cancel_job_v1(j.id, false, false) IS NOT NULL
"""


def cancel_jobs(job_ids: Iterable[int]) -> int:
    """Cancel these jobs if they are still ``todo``, in one statement on Django's connection;
    returns how many were cancelled."""
    ids = sorted(set(job_ids))  # in id order: concurrent cancels lock rows alike
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_CANCEL_SQL, [ids])
        (cancelled,) = cursor.fetchone()
    return int(cancelled)


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

#: The runs of the Task whose id is the SQL expression ``{task}`` still ``todo`` or ``doing``,
#: each with its job's status, as JSON text ``[[run id, job status or null], ...]``, NULL
#: when there is none: a scalar subquery for a read that takes many Tasks at once.
ACTIVE_RUNS_OF_TASK_SQL = """
    SELECT jsonb_agg(jsonb_build_array(r.id, j.status))::text
      FROM scheduler_taskrun r
      LEFT JOIN procrastinate_jobs j ON j.id = r.job_id
     WHERE r.task_id = {task} AND r.status IN ('todo', 'doing')
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


def _scheduler_workers() -> QuerySet[ProcrastinateWorker]:
    """The workers serving queue ``scheduler`` (all-queue ones included)."""
    serving = WorkerInfo.objects.filter(Q(queues__isnull=True) | Q(queues__has_key=SCHEDULER_QUEUE))
    return ProcrastinateWorker.objects.filter(id__in=serving.values("id"))


def scheduler_worker_heartbeat() -> dt.datetime | None:
    """The latest heartbeat of a worker serving queue ``scheduler``."""
    return _scheduler_workers().aggregate(latest=Max("last_heartbeat"))["latest"]


def live_scheduler_workers(since: dt.datetime) -> int:
    """How many workers serving queue ``scheduler`` sent a heartbeat since ``since``."""
    return _scheduler_workers().filter(last_heartbeat__gte=since).count()


def defer_scheduler_job(task_name: str, task_kwargs: dict[str, Any], queueing_lock: str) -> bool:
    """Defer a job of ``task_name`` on queue ``scheduler``, on Django's connection, unless a
    job with this ``queueing_lock`` already waits; whether it was deferred."""
    job = Job(
        id=None,
        queue=SCHEDULER_QUEUE,
        lock=None,
        queueing_lock=queueing_lock,
        priority=0,
        task_name=task_name,
        task_kwargs=task_kwargs,
    )
    try:
        job_manager().defer_job(job)
    except AlreadyEnqueued:
        return False
    return True


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
