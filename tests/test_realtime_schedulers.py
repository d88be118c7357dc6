"""The one real-time scheduling test: two scheduler workers, a per-second Task, no duplicate
and no gap. Everything else about scheduling runs on a simulated clock."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from integrations.models import Integration
from scheduler.models import SchedulerTick, Task, TaskRun

ROOT = Path(__file__).resolve().parent.parent


def test_two_scheduler_workers_every_second_no_duplicate_no_gap(
    clean_jobs, test_database_url, tenant
):
    # A real integration type: the worker subprocesses do not load the tests' probe.
    integration = Integration.objects.create(name="github", tenant=tenant, config={"org": "x"})
    task = integration.add_task("get_users", "* * * * * *")
    Task.objects.filter(pk=task.pk).update(catchup="all", overlap="allow")
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "SCHEDULER_PERIOD": "1",
        "LOG_LEVEL": "WARNING",
    }
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "procrastinate",
                "worker",
                "--queues=scheduler",
                f"--name=scheduler-{i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and TaskRun.objects.filter(task=task).count() < 8:
            time.sleep(0.25)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=20)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs

    ticks = sorted(TaskRun.objects.filter(task=task).values_list("scheduled_for", flat=True))
    assert len(ticks) >= 8, outputs
    assert len(set(ticks)) == len(ticks)
    expected = [ticks[0] + dt.timedelta(seconds=i) for i in range(len(ticks))]
    assert ticks == expected  # one run per second, none missing in between
    # Both workers defer the periodic job; each tick time still ran once.
    tick_times = list(SchedulerTick.objects.values_list("tick_time", flat=True))
    assert len(tick_times) >= 2 and len(set(tick_times)) == len(tick_times)
