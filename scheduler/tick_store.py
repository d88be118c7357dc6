"""The tick's reads and writes of Task and SchedulerTick rows (TaskRun rows: run_records).

Each is one statement whatever the number of due Tasks: rows travel as plain values, and
row sets as one JSON document.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection

from scheduler import sql
from scheduler.models import SchedulerTick
from scheduler.planner import Advance, DueTask
from tenants.models import paused_sql

if TYPE_CHECKING:
    from scheduler.tick import TickResult

#: The largest value of a PositiveIntegerField (PostgreSQL integer); counters saturate.
MAX_COUNT = 2_147_483_647

_DUE_SQL = f"""
    SELECT t.id, t.integration_id, t.tenant_id, t.name, t.cron,
           COALESCE(NULLIF(t.timezone, ''), n.timezone), t.kwargs::text, t.next_run_at,
           t.catchup, t.catchup_window, t.catchup_max, t.overlap, t.max_attempts,
           t.retry_backoff,
           {paused_sql("t", "%(now)s")},
           (NOT n.is_active OR NOT i.enabled OR {paused_sql("n", "%(now)s")}),
           i.name, t.plan_error
      FROM scheduler_task t
      JOIN tenants_tenant n ON n.id = t.tenant_id
      JOIN integrations_integration i ON i.id = t.integration_id
     WHERE t.enabled AND t.next_run_at <= %(now)s AND t.id <> ALL(%(passed)s)
     ORDER BY t.next_run_at, t.tenant_rank, t.tenant_id, t.id
     LIMIT %(limit)s
       FOR UPDATE OF t SKIP LOCKED
"""


def lock_due_tasks(now: dt.datetime, limit: int, passed: Sequence[int] = ()) -> list[DueTask]:
    """Up to ``limit`` enabled Tasks due at ``now``, locked (skipping those another
    scheduler holds), but for the ``passed`` ones (already planned by this tick and still
    due: those that could not be planned).

    The earliest due first, and among Tasks due at one instant, rank by rank: every
    tenant's first Task, then every tenant's second, so that a chunk of a herd holds every
    tenant's first jobs, not the whole list of the tenant created first."""
    with connection.cursor() as cursor:
        cursor.execute(_DUE_SQL, {"now": now, "limit": limit, "passed": list(passed)})
        rows = cursor.fetchall()
    return [DueTask(*row[:6], json.loads(row[6]), *row[7:]) for row in rows]  # type: ignore[call-arg]


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
