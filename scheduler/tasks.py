"""The ``scheduler`` job: a periodic procrastinate task on queue ``scheduler``.

Every worker runs procrastinate's periodic deferrer, which defers this job once per
period (procrastinate dedupes across workers); only workers serving queue ``scheduler``
execute it. It defers integration jobs and never runs integration code itself.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from procrastinate.contrib.django import app

from scheduler.cron import period_to_cron
from scheduler.queues import SCHEDULER_QUEUE
from scheduler.tick import run_tick


@app.periodic(cron=period_to_cron(settings.SCHEDULER_PERIOD), periodic_id="metronome-tick")
@app.task(name="scheduler", queue=SCHEDULER_QUEUE)
def scheduler(timestamp: int) -> dict[str, object]:
    """Run one tick for the periodic ``timestamp`` (the tick's time, not the clock)."""
    return run_tick(dt.datetime.fromtimestamp(timestamp, dt.UTC)).as_dict()


# The maintenance job lives in its own module; importing it registers it.
from scheduler import maintenance  # noqa: E402,F401
