"""The ``scheduler`` job: a periodic procrastinate task on queue ``scheduler``.

Every worker runs procrastinate's periodic deferrer, which defers this job once per
period (procrastinate dedupes across workers); only workers serving queue ``scheduler``
execute it. It defers integration jobs and never runs integration code itself. In a herd
(its first chunk full) it defers one ``metronome.tick_helper`` job per other live
scheduler worker, so that every scheduler takes chunks of the same tick.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from procrastinate.contrib.django import app

from scheduler import jobs
from scheduler.cron import period_to_cron
from scheduler.queues import SCHEDULER_QUEUE
from scheduler.tick import run_tick


@app.periodic(cron=period_to_cron(settings.SCHEDULER_PERIOD), periodic_id="metronome-tick")
@app.task(name="scheduler", queue=SCHEDULER_QUEUE)
def scheduler(timestamp: int) -> dict[str, object]:
    """Run one tick for the periodic ``timestamp`` (the tick's time, not the clock). When
    its first chunk is full (a herd), the other scheduler workers are called to help."""
    now = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return run_tick(now, on_full_chunk=lambda: call_helpers(timestamp)).as_dict()


@app.task(name="metronome.tick_helper", queue=SCHEDULER_QUEUE)
def tick_helper(timestamp: int) -> dict[str, object]:
    """Help the tick of ``timestamp`` through a herd: take the due Tasks no other scheduler
    holds, chunk by chunk, exactly as the tick does (``SKIP LOCKED`` splits them)."""
    return run_tick(dt.datetime.fromtimestamp(timestamp, dt.UTC)).as_dict()


def call_helpers(timestamp: int) -> int:
    """Defer one ``tick_helper`` job per other live scheduler worker; how many."""
    since = timezone.now() - dt.timedelta(seconds=settings.SCHEDULER_HEARTBEAT_MAX_AGE)
    others = jobs.live_scheduler_workers(since) - 1
    return sum(
        jobs.defer_scheduler_job(
            "metronome.tick_helper", {"timestamp": timestamp}, f"tick-helper-{timestamp}-{i}"
        )
        for i in range(others)
    )


# The maintenance job lives in its own module; importing it registers it.
from scheduler import maintenance  # noqa: E402,F401
