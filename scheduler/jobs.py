"""Where the scheduler touches procrastinate's tables; all of its SQL is here.

Everything runs on Django's connection, so it is atomic with the ORM writes around it,
in the web process and inside workers alike.
"""

from __future__ import annotations

import datetime as dt
import json
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
class DueTask:
    """The columns of a due Task that a tick reads; plain values, no ORM objects (a tick
    over 10,000 Tasks would spend most of its time building them)."""

    pk: int
    integration_id: int
    tenant_id: int
    name: str
    cron: str
    zone: str  # the Task's time zone, else its tenant's
    kwargs: dict[str, Any]
    next_run_at: dt.datetime
    catchup: str
    catchup_window: dt.timedelta
    catchup_max: int
    overlap: str
    max_attempts: int
    retry_backoff: dt.timedelta
    paused: bool  # the Task, at the tick's time
    owner_blocked: bool  # tenant inactive or paused, or integration disabled
    integration_type: str
    plan_error: str  # why the last tick could not plan it ("" when it could)

    def retry_policy(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff_seconds": self.retry_backoff.total_seconds(),
        }


_DUE_SQL = """
    SELECT t.id, t.integration_id, t.tenant_id, t.name, t.cron,
           COALESCE(NULLIF(t.timezone, ''), n.timezone), t.kwargs::text, t.next_run_at,
           t.catchup, t.catchup_window, t.catchup_max, t.overlap, t.max_attempts,
           t.retry_backoff,
           (t.paused_at IS NOT NULL AND (t.paused_until IS NULL OR t.paused_until > %(now)s)),
           (NOT n.is_active OR NOT i.enabled OR (n.paused_at IS NOT NULL
               AND (n.paused_until IS NULL OR n.paused_until > %(now)s))),
           i.name, t.plan_error
      FROM scheduler_task t
      JOIN tenants_tenant n ON n.id = t.tenant_id
      JOIN integrations_integration i ON i.id = t.integration_id
     WHERE t.enabled AND t.next_run_at <= %(now)s
     ORDER BY t.next_run_at, t.id
       FOR UPDATE OF t SKIP LOCKED
"""


def lock_due_tasks(now: dt.datetime) -> list[DueTask]:
    """Enabled Tasks due at ``now``, locked (skipping those another tick holds)."""
    with connection.cursor() as cursor:
        cursor.execute(_DUE_SQL, {"now": now})
        rows = cursor.fetchall()
    return [DueTask(*row[:6], json.loads(row[6]), *row[7:]) for row in rows]


@dataclass(frozen=True)
class RunToDefer:
    task_id: int
    tenant_id: int
    integration_id: int
    procrastinate_task: str
    kwargs: dict[str, Any]
    retry: dict[str, Any]
    scheduled_for: dt.datetime
    manual: bool = False

    @classmethod
    def of(
        cls, task: Task | DueTask, procrastinate_task: str, when: dt.datetime, manual: bool = False
    ) -> RunToDefer:
        return cls(task.pk, task.tenant_id, task.integration_id, procrastinate_task,
                   task.kwargs, task.retry_policy(), when, manual)  # fmt: skip


def job_for(run: RunToDefer) -> Job:
    return Job(
        id=None,
        queue=str(run.tenant_id),  # a tenant's queue is its id
        lock=None,
        queueing_lock=None,
        task_name=run.procrastinate_task,
        task_kwargs={
            "task_id": run.task_id,
            "scheduled_for": run.scheduled_for.isoformat(),
            "integration_id": run.integration_id,
            "kwargs": run.kwargs,
            "retry": run.retry,
        },
    )


# Row sets travel as one JSON document: json.dumps is C, whereas psycopg quotes every
# element of a text array in Python (most of a 10,000-Task tick's client time).
_INSERT_RUNS_SQL = """
    INSERT INTO scheduler_taskrun (task_id, tenant_id, scheduled_for, manual, job_id,
                                   status, attempts, attempt_log, enqueued_at, error)
    SELECT v.task_id, v.tenant_id, v.scheduled_for, v.manual, v.job_id,
           'todo', 0, '[]'::jsonb, now(), ''
      FROM jsonb_to_recordset(%s::jsonb)
           AS v(task_id bigint, tenant_id bigint, scheduled_for timestamptz, manual boolean,
                job_id bigint)
    RETURNING id
"""


def _rows(rows: Iterable[dict[str, Any]]) -> str:
    """A JSON array of row objects, datetimes as ISO 8601."""
    return json.dumps(list(rows), default=lambda value: value.isoformat())


def defer_runs(runs: list[RunToDefer]) -> list[int]:
    """Insert one job per run and its TaskRun, in the caller's transaction; TaskRun ids."""
    if not runs:
        return []
    manager = JobManager(
        django_connector.DjangoConnector(alias=procrastinate_settings.DATABASE_ALIAS)
    )
    jobs = manager.batch_defer_jobs([job_for(run) for run in runs])
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_RUNS_SQL,
            [
                _rows(
                    {
                        "task_id": run.task_id,
                        "tenant_id": run.tenant_id,
                        "scheduled_for": run.scheduled_for,
                        "manual": run.manual,
                        "job_id": job.id,
                    }
                    for run, job in zip(runs, jobs, strict=True)
                )
            ],
        )
        return [row[0] for row in cursor.fetchall()]


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


_EXISTING_SQL = """
    SELECT r.task_id, r.scheduled_for
      FROM scheduler_taskrun r
      JOIN jsonb_to_recordset(%s::jsonb) AS v(task_id bigint, scheduled_for timestamptz)
        ON r.task_id = v.task_id AND r.scheduled_for = v.scheduled_for
"""


def existing_ticks(pairs: Iterable[tuple[int, dt.datetime]]) -> set[tuple[int, dt.datetime]]:
    """Which (task, scheduled_for) pairs already have a run: they are never deferred again."""
    pairs = list(pairs)
    if not pairs:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            _EXISTING_SQL, [_rows({"task_id": t, "scheduled_for": when} for t, when in pairs)]
        )
        return set(cursor.fetchall())


# Counters saturate at the column's maximum rather than fail the whole tick's UPDATE.
_ADVANCE_SQL = """
    UPDATE scheduler_task AS t
       SET next_run_at = v.next_run_at,
           last_run_at = COALESCE(v.last_run_at, t.last_run_at),
           missed_count = LEAST(t.missed_count::bigint + v.missed, 2147483647),
           skipped_count = LEAST(t.skipped_count::bigint + v.skipped, 2147483647),
           last_skipped_at = CASE WHEN v.skipped > 0 THEN %(now)s::timestamptz
                                  ELSE t.last_skipped_at END,
           plan_error = v.error,
           plan_error_at = CASE WHEN v.error = '' THEN NULL
                                WHEN v.error = t.plan_error THEN t.plan_error_at
                                ELSE %(now)s::timestamptz END
      FROM jsonb_to_recordset(%(rows)s::jsonb)
           AS v(id bigint, next_run_at timestamptz, last_run_at timestamptz, missed bigint,
                skipped bigint, error text)
     WHERE t.id = v.id
"""


@dataclass
class Advance:
    task_id: int
    next_run_at: dt.datetime
    last_run_at: dt.datetime | None = None
    missed: int = 0
    skipped: int = 0
    error: str = ""  # why the Task could not be planned; "" clears a previous error


def advance_tasks(advances: list[Advance], now: dt.datetime) -> None:
    """One UPDATE for every due Task (Django's bulk_update is quadratic in PostgreSQL).

    ``plan_error_at`` keeps the tick at which the current error first came; an empty
    error clears both.
    """
    if not advances:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _ADVANCE_SQL,
            {
                "now": now,
                "rows": _rows(
                    {
                        "id": a.task_id,
                        "next_run_at": a.next_run_at,
                        "last_run_at": a.last_run_at,
                        "missed": a.missed,
                        "skipped": a.skipped,
                        "error": a.error,
                    }
                    for a in advances
                ),
            },
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
    return len(cancelled)  # their TaskRuns follow the jobs' status (trigger)
