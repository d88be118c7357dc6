"""Workers announce their queues for the dashboard; procrastinate's healthchecks pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from scheduler.models import WorkerInfo

ROOT = Path(__file__).resolve().parent.parent


def test_procrastinate_healthchecks_pass(test_database_url):
    result = subprocess.run(
        [sys.executable, "manage.py", "procrastinate", "healthchecks"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": test_database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Database connection: OK" in result.stdout and "Migrations: OK" in result.stdout


def test_dashboard_lists_running_workers_with_their_queues(
    client, django_user_model, test_database_url, clean_jobs
):
    worker = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "procrastinate",
            "worker",
            "--queues=7,scheduler",
            "--name=dash-worker",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": test_database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not WorkerInfo.objects.filter(name="dash-worker").exists():
            assert time.monotonic() < deadline, "the worker never announced itself"
            time.sleep(0.3)
        client.force_login(django_user_model.objects.create_superuser("r", "r@e.x", "pw"))
        page = client.get("/admin/dashboard/").content.decode()
        assert "dash-worker" in page and "7, scheduler" in page
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert not WorkerInfo.objects.filter(name="dash-worker").exists()  # forgotten on exit
