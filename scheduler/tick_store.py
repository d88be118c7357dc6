"""The tick's reads and writes of Task and SchedulerTick rows (TaskRun writes: run_records).

Each is one statement whatever the number of due Tasks: rows travel as plain values, and
row sets as one JSON document. The read of due Tasks also reads their runs, so that a chunk
knows all it plans from in one round trip.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection

from scheduler import sql
from scheduler.jobs import ACTIVE_RUNS_OF_TASK_SQL
from scheduler.models import SchedulerTick
from scheduler.planner import Advance, DueTask
from scheduler.run_records import ActiveRuns, active_from_rows
from tenants.models import paused_sql

if TYPE_CHECKING:
    from scheduler.tick import TickResult

#: The largest value of a PositiveIntegerField (PostgreSQL integer); counters saturate.
MAX_COUNT = 2_147_483_647

#: The due Tasks, locked, then what the tick must know of each one's runs: the fire times
#: at or after its ``next_run_at`` that already have a run (the catch-up policies only
#: plan fires in ``[next_run_at, now]``), and its runs still queued or running with their
#: job's status. The lock is taken first, in a materialized step, so that runs are read
#: only for the Tasks this tick holds.
_DUE_SQL = f"""
    WITH due AS MATERIALIZED (
        SELECT t.id, t.integration_id, t.tenant_id, t.name, t.cron,
               COALESCE(NULLIF(t.timezone, ''), n.timezone) AS zone, t.kwargs::text,
               t.next_run_at, t.catchup, t.catchup_window, t.catchup_max, t.overlap,
               t.max_attempts, t.retry_backoff,
               {paused_sql("t", "%(now)s")} AS paused,
               (NOT n.is_active OR NOT i.enabled OR {paused_sql("n", "%(now)s")}) AS blocked,
               i.name AS integration_type, t.plan_error, t.tenant_rank
          FROM scheduler_task t
          JOIN tenants_tenant n ON n.id = t.tenant_id
          JOIN integrations_integration i ON i.id = t.integration_id
         WHERE t.enabled AND t.next_run_at <= %(now)s AND t.id <> ALL(%(passed)s)
         ORDER BY t.next_run_at, t.tenant_rank, t.tenant_id, t.id
         LIMIT %(limit)s
           FOR UPDATE OF t SKIP LOCKED
    )
    SELECT d.id, d.integration_id, d.tenant_id, d.name, d.cron, d.zone, d.kwargs,
           d.next_run_at, d.catchup, d.catchup_window, d.catchup_max, d.overlap,
           d.max_attempts, d.retry_backoff, d.paused, d.blocked, d.integration_type,
           d.plan_error,
           ARRAY(SELECT r.scheduled_for FROM scheduler_taskrun r
                  WHERE r.task_id = d.id
                    AND r.scheduled_for BETWEEN d.next_run_at AND %(now)s),
           ({ACTIVE_RUNS_OF_TASK_SQL.format(task="d.id")})
      FROM due d
     ORDER BY d.next_run_at, d.tenant_rank, d.tenant_id, d.id
"""


@dataclass(frozen=True)
class DueBatch:
    """What one chunk of a tick reads: its due Tasks, locked, in due order, and their runs."""

    tasks: list[DueTask]
    #: (task, fire) pairs that already have a run: they are never deferred again.
    done: set[tuple[int, dt.datetime]]
    active: ActiveRuns


def lock_due_tasks(now: dt.datetime, limit: int, passed: Sequence[int] = ()) -> DueBatch:
    """Up to ``limit`` enabled Tasks due at ``now``, locked (skipping those another
    scheduler holds), but for the ``passed`` ones (already planned by this tick and still
    due: those that could not be planned); with their runs (see :class:`DueBatch`).

    The earliest due first, and among Tasks due at one instant, rank by rank: every
    tenant's first Task, then every tenant's second, so that a chunk of a herd holds every
    tenant's first jobs, not the whole list of the tenant created first. One statement."""
    with connection.cursor() as cursor:
        cursor.execute(_DUE_SQL, {"now": now, "limit": limit, "passed": list(passed)})
        rows = cursor.fetchall()
    tasks = [DueTask(*row[:6], json.loads(row[6]), *row[7:18]) for row in rows]  # type: ignore[call-arg]
    done = {(row[0], when) for row in rows for when in row[18]}
    active = active_from_rows(
        (run_id, row[0], status)
        for row in rows
        if row[19]
        for run_id, status in json.loads(row[19])
    )
    return DueBatch(tasks, done, active)


def commit_without_flush_wait() -> None:
    """Let the current transaction's commit return before PostgreSQL has flushed it to
    disk (``synchronous_commit = off``, for this transaction only).

    Waiting for that flush is a good part of each chunk's time. What it risks is losing
    the chunk whole if PostgreSQL itself crashes within a fraction of a second of the
    commit: its runs, jobs and ``next_run_at`` updates revert together, so its Tasks are
    simply due again at the next tick, and nothing runs twice. Nothing of a lost chunk can
    have run either: a worker starts a job only after committing it as ``doing``, a
    synchronous commit that flushes the WAL written before it, the chunk included.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


# Counters saturate at the column's maximum rather than fail the whole tick's UPDATE.
_ADVANCE_SQL = f"""
    UPDATE scheduler_task AS t
       SET next_run_at = v.next_run_at,
           last_run_at = COALESCE(v.last_run_at, t.last_run_at),
           missed_count = LEAST(t.missed_count::bigint + v.missed, {MAX_COUNT}),
           skipped_count = LEAST(t.skipped_count::bigint + v.skipped, {MAX_COUNT}),
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


def advance_tasks(advances: Sequence[Advance], now: dt.datetime) -> None:
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
                "rows": sql.json_rows(
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


def record_tick(result: TickResult, started: dt.datetime, finished: dt.datetime) -> None:
    """The heartbeat health checks and admin read (one per tick and scheduler that ran
    it: two schedulers sharing a herd record a row each); old ones are pruned as we go."""
    retention = dt.timedelta(days=settings.SCHEDULER_TICK_RETENTION_DAYS)
    SchedulerTick.objects.filter(started_at__lt=started - retention).delete()
    SchedulerTick.objects.create(
        tick_time=result.now,
        started_at=started,
        finished_at=finished,
        due=result.due,
        deferred=len(result.deferred),
        skipped=min(result.skipped, MAX_COUNT),
        missed=min(result.missed, MAX_COUNT),
        blocked=result.blocked,
        errors=len(result.errors),
    )
