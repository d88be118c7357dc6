"""The maintenance job: retries jobs of dead workers and purges old history.

procrastinate detects stalled jobs (their worker stopped sending heartbeats) but does not
retry them; this job, on queue ``scheduler``, does. It deletes finished jobs past
``JOB_RETENTION_HOURS`` (their TaskRuns keep the history), then finished TaskRuns past
``TASKRUN_RETENTION_DAYS`` (:mod:`scheduler.retention`) and audit entries past
``AUDIT_RETENTION_DAYS`` (:mod:`audit.retention`), in short batches within one time budget,
ending when a tick waits and pausing while one runs on another worker. It has a lower
priority than the tick, so that a tick deferred at the same moment goes first.
"""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from procrastinate import JobContext
from procrastinate.contrib.django import app

from scheduler.queues import SCHEDULER_QUEUE
from scheduler.retention import (
    MAINTENANCE_TASK,
    Pacing,
    purge_audit_entries,
    purge_task_runs,
    tick_running,
    tick_waiting,
)
from scheduler.run_records import mark_stalled

#: Below the tick's (procrastinate's default, 0): when both wait, the tick is taken first.
#: Tenant jobs get -1 and below (scheduler.fairness): a worker serving every queue still
#: takes this job before all but those few.
PRIORITY = -1


@app.periodic(cron="* * * * *", periodic_id="metronome-maintenance")
@app.task(name=MAINTENANCE_TASK, queue=SCHEDULER_QUEUE, pass_context=True, priority=PRIORITY)
async def maintenance(context: JobContext, timestamp: int) -> dict[str, int]:
    manager = context.app.job_manager
    stalled = list(
        await manager.get_stalled_jobs(seconds_since_heartbeat=settings.STALLED_JOB_SECONDS)
    )
    for job in stalled:
        await manager.retry_job(job, retry_at=dt.datetime.now(dt.UTC))
        await sync_to_async(_mark_stalled, thread_sensitive=False)(job.id)
    await manager.delete_old_jobs(
        nb_hours=settings.JOB_RETENTION_HOURS,
        include_failed=True,
        include_cancelled=True,
        include_aborted=True,
    )
    purged = await sync_to_async(_purge_history, thread_sensitive=False)()
    return {"stalled_retried": len(stalled), **purged}


def purge_history(now: dt.datetime | None = None, pacing: Pacing | None = None) -> dict[str, int]:
    """Old TaskRuns, then old audit entries, within one budget (by default the settings',
    making way for any tick); how many rows of each were deleted."""
    pacing = pacing or Pacing.from_settings(stop_if=tick_waiting, pause_while=tick_running)
    runs = purge_task_runs(now, pacing=pacing)
    entries = purge_audit_entries(now, pacing=pacing)
    return {"task_runs_purged": runs.deleted, "audit_entries_purged": entries.deleted}


def _purge_history() -> dict[str, int]:
    try:
        return purge_history()
    finally:
        connection.close()  # a pool thread: do not leave its connection behind


def _mark_stalled(job_id: int | None) -> None:
    try:
        mark_stalled(job_id)
    finally:
        connection.close()  # a pool thread: do not leave its connection behind
