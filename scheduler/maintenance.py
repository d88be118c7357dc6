"""The maintenance job: retries jobs of dead workers and purges old finished jobs.

procrastinate detects stalled jobs (their worker stopped sending heartbeats) but does not
retry them; this job, on queue ``scheduler``, does, and it deletes finished jobs past
their retention. TaskRun rows keep the history either way.
"""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from procrastinate import JobContext
from procrastinate.contrib.django import app

from scheduler.queues import SCHEDULER_QUEUE
from scheduler.run_records import mark_stalled


@app.periodic(cron="* * * * *", periodic_id="metronome-maintenance")
@app.task(name="metronome.maintenance", queue=SCHEDULER_QUEUE, pass_context=True)
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
    return {"stalled_retried": len(stalled)}


def _mark_stalled(job_id: int | None) -> None:
    try:
        mark_stalled(job_id)
    finally:
        connection.close()  # a pool thread: do not leave its connection behind
