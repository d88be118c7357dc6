"""Freezing the scheduler worker (SIGSTOP) turns /healthz red within 30 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_frozen_scheduler_fails_healthz_within_30_seconds(client, test_database_url, clean_jobs):
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url,
        "SCHEDULER_PERIOD": "1",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "procrastinate", "worker", "--queues=scheduler"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/healthz").json()
            time.sleep(0.5)
        worker.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        while (body := client.get("/healthz").json())["status"] == "ok":
            assert time.monotonic() - frozen_at < 30, "still healthy 30 s after SIGSTOP"
            time.sleep(1)
        assert "scheduler_worker" in body["failing"]
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
