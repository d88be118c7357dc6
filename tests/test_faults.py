"""Faults: a worker killed mid-job, SIGTERM, purge of finished jobs."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler.models import TaskRun
from scheduler.tick import run_tick
from tenants.models import Locker
from tests.fake_github import FakeGitHub, allow, member, serve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def slow_github(settings, monkeypatch):
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    with serve(fake):
        allow(fake, settings, monkeypatch)  # monkeypatch: the env of worker subprocesses
        yield fake


def github_run(tenant, base_url: str) -> TaskRun:
    integration = Integration.objects.create(
        name="github", tenant=tenant, config={"org": "acme", "base_url": base_url}
    )
    task = integration.add_task("get_users", "* * * * *")
    Locker.add("github_token", "ghp_token", tenant.id)
    run_tick(task.next_run_at)
    return TaskRun.objects.get(task=task)


def start_worker(url: str, queue: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "procrastinate", "worker", f"--queues={queue}"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_killed_worker_job_is_retried_by_maintenance(
    run_worker, test_database_url, tenant, slow_github, settings
):
    run = github_run(tenant, slow_github.base_url)
    slow_github.delays = [60]  # the first attempt hangs until its worker is killed
    worker = start_worker(test_database_url, tenant.queue_name)
    try:
        wait_for(lambda: len(slow_github.requests) == 1)  # mid-request
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert ProcrastinateJob.objects.get(id=run.job_id).status == "doing"  # stalled

    settings.STALLED_JOB_SECONDS = 1
    time.sleep(1.5)
    app.configure_task("metronome.maintenance").defer(timestamp=int(time.time()))
    run_worker(queues=["scheduler"])
    assert ProcrastinateJob.objects.get(id=run.job_id).status == "todo"

    run_worker(queues=[tenant.queue_name])
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 2
    assert [a["outcome"] for a in run.attempt_log] == ["stalled", "succeeded"]


def test_sigterm_lets_the_running_job_finish_and_exits_0(
    test_database_url, tenant, slow_github, clean_jobs
):
    run = github_run(tenant, slow_github.base_url)
    slow_github.delays = [2]
    worker = start_worker(test_database_url, tenant.queue_name)
    wait_for(lambda: TaskRun.objects.get(pk=run.pk).status == "doing")
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_purge_keeps_task_run_history(run_worker, tenant, slow_github, settings):
    run = github_run(tenant, slow_github.base_url)
    run_worker(queues=[tenant.queue_name])
    with connection.cursor() as cursor:  # finished long ago
        cursor.execute(
            "UPDATE procrastinate_events SET at = now() - interval '30 days' WHERE job_id = %s",
            [run.job_id],
        )
    settings.JOB_RETENTION_HOURS = 24
    app.configure_task("metronome.maintenance").defer(timestamp=int(time.time()))
    run_worker(queues=["scheduler"])
    assert not ProcrastinateJob.objects.filter(id=run.job_id).exists()
    run.refresh_from_db()
    assert run.status == "succeeded" and run.finished_at < dt.datetime.now(dt.UTC)
