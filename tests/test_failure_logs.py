"""What a worker's log shows when a job fails, and what every process logs at start-up.

A failure the integration foresaw (missing token, rejected token, rate limit) is one WARNING
line saying which tenant, Task and job, without a traceback; any other failure keeps its
traceback, logged once. Each run goes through a real worker; what is checked is what the
configured console handler writes (and the records it gets), as an operator reads it.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from integrations.models import Integration
from scheduler.logcontext import JobContextFilter
from scheduler.models import Task, TaskRun
from scheduler.tick import run_tick
from tenants.models import Locker, Tenant
from tests.fake_github import FakeGitHub, allow, member, serve

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "ghp-never-in-the-log-0123456789"


class _Recorder(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records
        self.addFilter(JobContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class ConsoleLog:
    """What the configured console handler wrote, and the records it was given."""

    stream: io.StringIO = field(default_factory=io.StringIO)
    records: list[logging.LogRecord] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def at_least(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno >= level]


@pytest.fixture
def console() -> Iterator[ConsoleLog]:
    """Redirect the console handler of settings.LOGGING to a buffer, and record what it gets
    (a recorder sits next to it on every logger that has it)."""
    handler = next(h for h in logging.getLogger("procrastinate").handlers if h.name == "console")
    log = ConsoleLog()
    recorder = _Recorder(log.records)
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and handler in logger.handlers
    ]
    previous = handler.setStream(log.stream)
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        yield log
    finally:
        handler.setStream(previous)
        for logger in loggers:
            logger.removeHandler(recorder)


@pytest.fixture
def github(settings) -> Iterator[FakeGitHub]:
    fake = FakeGitHub(members={"acme": [member(1, "ada"), member(2, "bob")]})
    with serve(fake):
        allow(fake, settings)
        yield fake


def github_task(tenant: Tenant, github: FakeGitHub) -> Task:
    integration = Integration.objects.create(
        name="github", tenant=tenant, config={"org": "acme", "base_url": github.base_url}
    )
    return integration.add_task("get_users", "* * * * *")


def run_due(task: Task, run_worker, tenant: Tenant) -> None:
    run_tick(task.next_run_at)
    run_worker(queues=[tenant.queue_name])


def context_of(task: Task, attempt: int = 1) -> str:
    run = TaskRun.objects.get(task=task)
    return f"tenant={task.tenant_id} task={task.pk} job={run.job_id} attempt={attempt}"


def test_missing_token_is_one_warning_line_with_tenant_task_and_job(
    run_worker, tenant, github, console
):
    task = github_task(tenant, github)

    run_due(task, run_worker, tenant)

    [line] = console.at_least(logging.WARNING)
    assert line.levelname == "WARNING" and line.exc_info is None
    assert line.job_context == context_of(task)
    message = line.getMessage()
    assert "github.get_users failed" in message
    assert "Locker key 'github_token' is not set for tenant" in message
    assert "Traceback" not in console.text
    [written] = [text for text in console.text.splitlines() if "WARNING" in text]
    assert f"[{context_of(task)}]" in written and "Locker.add('github_token'" in written
    # The run's stored error still has the whole story for admin.
    run = TaskRun.objects.get(task=task)
    assert run.status == "failed" and "Traceback" in run.error


def test_rejected_token_echoed_back_is_one_masked_warning_line(run_worker, tenant, github, console):
    task = github_task(tenant, github)
    Locker.add("github_token", TOKEN, tenant.id)
    github.replies.append((401, {}, lambda auth: {"message": f"Bad credentials: {auth}"}))

    run_due(task, run_worker, tenant)

    [line] = console.at_least(logging.WARNING)
    assert line.levelname == "WARNING" and line.exc_info is None
    assert line.job_context == context_of(task)
    assert "GitHub rejected the token (HTTP 401" in line.getMessage()
    assert "Traceback" not in console.text
    assert TOKEN not in console.text and "***" in console.text


def test_rate_limit_is_one_warning_line_then_the_retry_succeeds(
    run_worker, tenant, github, console
):
    task = github_task(tenant, github)
    Locker.add("github_token", TOKEN, tenant.id)
    github.replies.append((429, {"Retry-After": "0"}, {"message": "slow down"}))

    run_due(task, run_worker, tenant)

    assert TaskRun.objects.get(task=task).status == "succeeded"
    [line] = console.at_least(logging.WARNING)
    assert line.levelname == "WARNING" and line.exc_info is None
    assert line.job_context == context_of(task, attempt=1)
    assert "github.get_users will be retried: RetryLater: GitHub rate limit" in line.getMessage()
    assert "Traceback" not in console.text


@pytest.mark.parametrize(
    ("max_attempts", "final_status", "level"),
    [(1, "failed", logging.ERROR), (2, "succeeded", logging.INFO)],
)
def test_unexpected_error_keeps_its_traceback_logged_once(
    run_worker, tenant, probe_task, console, max_attempts, final_status, level
):
    task = probe_task(
        kwargs={"fail_first": 1}, max_attempts=max_attempts, retry_backoff=dt.timedelta(0)
    )

    run_due(task, run_worker, tenant)

    assert TaskRun.objects.get(task=task).status == final_status
    assert console.text.count("Traceback (most recent call last)") == 1
    assert console.text.count("RuntimeError: probe failure on attempt 1") == 1
    [failure] = [r for r in console.records if r.exc_info]
    assert failure.levelno == level and failure.name.startswith("procrastinate")
    assert not [r for r in console.records if r.levelno == logging.WARNING]


def periodic_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "Registering task" in line]


def test_a_manage_command_logs_each_periodic_task_once(test_database_url):
    env = {**os.environ, "DATABASE_URL": test_database_url, "LOG_LEVEL": "INFO"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = periodic_lines(result.stdout + result.stderr)
    assert sorted(line.split("Registering task ")[1].split()[0] for line in lines) == [
        "metronome.maintenance",
        "scheduler",
    ], lines


def test_the_autoreloading_web_server_logs_each_periodic_task_once(test_database_url):
    """``runserver`` runs as two processes (a file watcher and the server): one line each."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": test_database_url, "LOG_LEVEL": "INFO"}
    env.pop("RUN_MAIN", None)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("runserver did not start listening within 60 s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "Watching for file changes" in output  # the autoreloader ran
    lines = periodic_lines(output)
    assert sorted(line.split("Registering task ")[1].split()[0] for line in lines) == [
        "metronome.maintenance",
        "scheduler",
    ], output


def test_a_remote_service_down_is_one_warning_line_and_retried_by_policy(
    run_worker, tenant, github, console, settings
):
    """Nothing listens at the integration's address: an outage, not a bug. One WARNING line
    per attempt, no traceback, and the Task's retry policy applies (2 attempts here)."""
    task = github_task(tenant, github)
    Locker.add("github_token", TOKEN, tenant.id)
    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = f"127.0.0.1:{closed_port}"
    settings.INTEGRATION_ALLOWED_HOSTS = [*settings.INTEGRATION_ALLOWED_HOSTS, down]
    task.integration.config["base_url"] = f"http://{down}"
    task.integration.save()
    Task.objects.filter(pk=task.pk).update(max_attempts=2, retry_backoff=dt.timedelta(0))

    run_due(task, run_worker, tenant)

    run = TaskRun.objects.get(task=task)
    assert run.status == "failed" and run.attempts == 2
    lines = console.at_least(logging.WARNING)
    assert [line.levelname for line in lines] == ["WARNING", "WARNING"]
    assert all(line.exc_info is None for line in lines)
    assert "RemoteUnavailable: 127.0.0.1 could not be reached" in lines[0].getMessage()
    assert "will be retried" in lines[0].getMessage()
    assert "Traceback" not in console.text
    assert "ConnectError" in run.error  # the stored error keeps the cause for admin
