"""Fault: PostgreSQL restarts under a running scheduler worker.

Runs against a throw-away cluster of its own (the shared one serves the other tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent

SETUP = """
from django.contrib.auth.models import User
from tenants.models import Tenant
from integrations.models import Integration
user = User.objects.create_user("pg", "pg@example.com")
tenant = Tenant.create(user, "pg", "pg@example.com")
task = Integration(name="github", tenant_id=tenant.id, config={"org": "x"}).add_task(
    "get_users", "* * * * * *", catchup="all", overlap="allow")
print(task.id)
"""


def ticks(url: str, task_id: int) -> list:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT scheduled_for FROM scheduler_taskrun WHERE task_id = %s ORDER BY 1",
            [task_id],
        ).fetchall()
    return [r[0] for r in rows]


def wait_for_runs(url: str, task_id: int, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(ticks(url, task_id)) >= count:
                return
        except psycopg.OperationalError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"fewer than {count} runs after {timeout} s")


@pytest.mark.skipif(os.environ.get("SKIP_PG_RESTART") == "1", reason="SKIP_PG_RESTART=1")
def test_scheduler_resumes_after_postgres_restart(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["METRONOME_PG_DIR"] = str(tmp_path / "pg")
    env.pop("METRONOME_PG_PORT", None)

    def localdb(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "localdb", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    url = localdb("start")
    env.update(DATABASE_URL=url, SCHEDULER_PERIOD="1", LOG_LEVEL="WARNING")
    worker = None
    output = ""
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=180)
        setup = subprocess.run(
            [*manage, "shell", "-c", SETUP],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        task_id = int(setup.stdout.strip().splitlines()[-1])
        log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed with the worker
        # run.sh's worker: restarts procrastinate's worker when it loses the database.
        worker = subprocess.Popen(
            ["bash", "run.sh", "worker"],
            cwd=ROOT,
            env={**env, "WORKER_QUEUES": "scheduler"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_runs(url, task_id, 3)
        localdb("stop")
        time.sleep(2)
        localdb("start")
        before = len(ticks(url, task_id))
        try:
            wait_for_runs(url, task_id, before + 5)
        finally:
            alive = worker.poll() is None
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            log.close()
            output = (tmp_path / "worker.log").read_text()[-3000:]
            print(output)
        runs = ticks(url, task_id)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        localdb("stop")
        cluster = Path((tmp_path / "pg" / "cluster_dir").read_text().strip())
        subprocess.run(["rm", "-rf", str(cluster)], check=False)
    assert alive, f"the supervised worker must survive the restart:\n{output}"
    assert worker.returncode == 0, output
    # No tick doubled, and none lost: catch-up "all" runs the seconds it was down.
    assert len(set(runs)) == len(runs)
    seconds = [(t - runs[0]).total_seconds() for t in runs]
    assert seconds == list(range(len(runs))), output
