"""The foundation: real procrastinate workers on PostgreSQL, and ``run.sh``, the one entry point."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from scheduler.models import WorkerInfo
from tests import conftest

ROOT = Path(__file__).resolve().parent.parent


def test_worker_runs_a_deferred_job_to_succeeded(run_worker):
    conftest.PROBE_RESULTS.clear()
    job_id = app.configure_task("tests.add").defer(a=2, b=3)
    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"

    run_worker(queues=["tests"])

    assert ProcrastinateJob.objects.get(id=job_id).status == "succeeded"
    assert conftest.PROBE_RESULTS == [5]


def run_sh(*args: str, env: dict[str, str] | None = None, timeout: int = 120):
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(ROOT / "run.sh"), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def traced(output: str, command: str) -> list[str]:
    """The lines of bash's trace (``+ ...``) that ran ``command``, in any run.sh process
    (honcho prefixes a process's lines with its time and name, then ``| ``)."""
    trace = re.compile(r"(?:^|\| )\++ ")
    return [line for line in output.splitlines() if trace.search(line) and command in line]


def test_run_sh_sets_up_once_then_starts_web_and_both_workers(test_database_url, clean_jobs):
    """``./run.sh``: the venv check, the database check and migrate run once, before the
    processes start; each worker starts straight away, supervised; SIGTERM stops them all."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"WORKER_QUEUES", "AS_WORKER"}}
    # Every bash that run.sh starts, through honcho, inherits the trace (SHELLOPTS).
    env.update(DATABASE_URL=test_database_url, WEB_PORT=str(port), SHELLOPTS="xtrace")
    system = subprocess.Popen(
        ["bash", str(ROOT / "run.sh")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            names = set(WorkerInfo.objects.values_list("name", flat=True))
            web_up = subprocess.run(
                ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"], capture_output=True
            )
            if names == {"scheduler", "tenants"} and web_up.returncode == 0:
                break
            assert system.poll() is None and time.monotonic() < deadline, names
            time.sleep(0.5)
    finally:
        system.send_signal(signal.SIGTERM)
        output = system.communicate(timeout=60)[0]
    assert len(traced(output, "manage.py migrate")) == 1, output
    assert len(traced(output, "localdb check-url")) == 1, output
    assert len(traced(output, "ensure_venv")) == 1, output
    supervised = [line for line in traced(output, "procrastinate worker") if "supervise " in line]
    assert len(supervised) == 2, output
    assert "run.sh: worker on queues: scheduler" in output
    assert "run.sh: worker on queues: all" in output
    assert not WorkerInfo.objects.exists(), output  # both stopped and said so


def test_run_sh_rejects_unknown_command():
    result = run_sh("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
    assert "./run.sh test" in result.stderr  # usage follows


def test_run_sh_unreachable_database_url_is_one_clear_line():
    url = "postgres://someone:s3cret-pw@db.invalid:5432/metronome"
    result = run_sh("manage", "check", env={"DATABASE_URL": url})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "db.invalid:5432" in lines[0]
    assert "DATABASE_URL" in lines[0]
    assert "s3cret-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_run_sh_rejects_malformed_worker_queues():
    result = run_sh("worker", env={"WORKER_QUEUES": "1;rm -rf /"})
    assert result.returncode == 2
    assert "WORKER_QUEUES" in result.stderr and "comma-separated" in result.stderr
    assert result.stderr.rstrip().endswith("or WORKER_QUEUES=scheduler)")  # the message, no more


def test_the_procfile_worker_command_refuses_to_run_outside_run_sh():
    result = run_sh("_worker", env={"WORKER_QUEUES": "scheduler"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "run.sh: '_worker' runs inside ./run.sh after its set-up; use ./run.sh worker"
    )


def test_missing_secret_key_with_debug_off_fails_clearly():
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env.update(DEBUG="False", SECRET_KEY="")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG is False" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the unreachable-folder layout needs root")
def test_embedded_cluster_outside_reach_of_server_user(tmp_path):
    """A clone under a 0700 folder (like /root): data goes where the server user can go."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    state = private / "clone" / ".local" / "pg"
    env = {**os.environ, "METRONOME_PG_DIR": str(state)}
    env.pop("DATABASE_URL", None)

    def localdb(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "localdb", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )

    started = localdb("start")
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("postgres://metronome:") and "@127.0.0.1:" in url
        assert ":5432/" not in url
        cluster = Path((state / "cluster_dir").read_text().strip())
        assert cluster.parent == Path("/var/lib/metronome-pg")
        assert oct(cluster.stat().st_mode & 0o777) == "0o700"
        assert cluster.stat().st_uid != 0
        for secret in ("password", "database_url"):
            assert oct((state / secret).stat().st_mode & 0o777) == "0o600"
        # Reused, not re-initialised, on the next start.
        again = localdb("start")
        assert again.returncode == 0 and again.stdout.strip() == url
        import psycopg

        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "metronome"
    finally:
        stopped = localdb("stop")
        import shutil

        if "cluster" in locals():
            shutil.rmtree(cluster, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
