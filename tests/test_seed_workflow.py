"""The shell workflow end to end (tenant, integration, task, Locker, then the jobs), with
real workers and a local GitHub."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.github.models import GithubUser
from integrations.models import Integration
from scheduler.bg_helper import BgHelper
from scheduler.models import Task, TaskRun
from scheduler.tick import run_tick
from tenants.models import Locker, Tenant
from tests.fake_github import FakeGitHub, allow, member, serve

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC


@pytest.fixture
def github(settings):
    fake = FakeGitHub(members={"acme": [member(i, f"user{i}") for i in range(1, 6)]})
    with serve(fake):
        allow(fake, settings)
        yield fake


def make_github_task(tenant: Tenant, base_url: str, **config) -> Task:
    integration = Integration(
        name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": base_url, **config}
    )
    task = integration.add_task(name="get_users", cron="* * * * *")
    Locker.add("github_token", "ghp-test-token", tenant.id)
    return task


def test_one_tick_one_job_in_the_tenant_queue_run_by_that_tenant_worker(
    run_worker, tenant, other_tenant, github
):
    task = make_github_task(tenant, github.base_url)
    tick = task.next_run_at

    result = run_tick(tick)

    jobs = list(ProcrastinateJob.objects.all())
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.queue_name, job.task_name, job.status) == (
        str(tenant.id),
        "github.get_users",
        "todo",
    )
    assert job.args["task_id"] == task.id
    assert job.args["scheduled_for"] == tick.isoformat()
    assert "ghp-test-token" not in str(job.args)
    run = TaskRun.objects.get()
    assert (run.task_id, run.job_id, run.status, run.scheduled_for) == (
        task.id,
        job.id,
        "todo",
        tick,
    )
    assert result.deferred == [run.id]

    # The scheduler never runs integration code; another tenant's worker never takes it.
    run_worker(queues=["scheduler", str(other_tenant.id)])
    assert ProcrastinateJob.objects.get(id=job.id).status == "todo"
    assert not GithubUser.objects.exists()

    run_worker(queues=[tenant.queue_name])

    assert ProcrastinateJob.objects.get(id=job.id).status == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 1
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    assert sorted(GithubUser.objects.filter(tenant=tenant).values_list("login", flat=True)) == [
        f"user{i}" for i in range(1, 6)
    ]
    # Pagination was followed (pages of 2) and the token went only to our server.
    assert len(github.requests) == 3
    assert {auth for _, auth in github.requests} == {"Bearer ghp-test-token"}

    listed = BgHelper().list_jobs()
    assert [(j.id, j.status, j.task_id) for j in listed] == [(job.id, "succeeded", task.id)]
    assert f"job {job.id} [succeeded] github.get_users queue={tenant.id} task={task.id}" in str(
        listed[0]
    )
    assert BgHelper().list_jobs(tenant=other_tenant) == []
    assert BgHelper().list_jobs(queue=tenant.queue_name, status="succeeded")[0].id == job.id


def test_second_sync_upserts_instead_of_duplicating(run_worker, tenant, github):
    task = make_github_task(tenant, github.base_url)
    run_tick(task.next_run_at)
    run_worker(queues=[tenant.queue_name])
    github.members["acme"][0]["login"] = "renamed"
    task.refresh_from_db()
    run_tick(task.next_run_at)
    run_worker(queues=[tenant.queue_name])
    assert GithubUser.objects.filter(tenant=tenant).count() == 5
    assert GithubUser.objects.get(tenant=tenant, external_id=1).login == "renamed"
    assert list(TaskRun.objects.values_list("status", flat=True)) == ["succeeded"] * 2


def test_rate_limit_retries_later_instead_of_failing(run_worker, tenant, github):
    task = make_github_task(tenant, github.base_url)
    github.replies.append((429, {"Retry-After": "0"}, {"message": "slow down"}))
    run_tick(task.next_run_at)

    run_worker(queues=[tenant.queue_name])

    job = ProcrastinateJob.objects.get()
    assert job.status == "succeeded" and job.attempts == 2
    run = TaskRun.objects.get()
    assert run.status == "succeeded" and run.attempts == 2
    assert GithubUser.objects.count() == 5


def test_rate_limit_in_the_future_leaves_the_run_waiting(run_worker, tenant, github):
    task = make_github_task(tenant, github.base_url)
    reset = int((dt.datetime.now(UTC) + dt.timedelta(hours=1)).timestamp())
    github.replies.append(
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
            {"message": "API rate limit exceeded"},
        )
    )
    run_tick(task.next_run_at)

    run_worker(queues=[tenant.queue_name])

    job = ProcrastinateJob.objects.get()
    assert job.status == "todo"
    assert int(job.scheduled_at.timestamp()) == reset
    run = TaskRun.objects.get()
    assert run.status == "todo" and "rate limit" in run.error


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-token", "Locker key 'github_token' is not set for tenant"),
        ("no-org", "has no organisation"),
        ("bad-org", "organisation 'nobody' was not found"),
    ],
)
def test_missing_token_or_org_fails_with_a_clear_message(
    run_worker, tenant, github, setup, message
):
    task = make_github_task(tenant, github.base_url)
    if setup == "no-token":
        Locker.remove("github_token", tenant.id)
    elif setup == "no-org":
        Integration.objects.filter(pk=task.integration_id).update(
            config={"base_url": github.base_url}
        )
    else:
        Integration.objects.filter(pk=task.integration_id).update(
            config={"org": "nobody", "base_url": github.base_url}
        )
    run_tick(task.next_run_at)

    run_worker(queues=[tenant.queue_name])

    assert ProcrastinateJob.objects.get().status == "failed"
    run = TaskRun.objects.get()
    assert run.status == "failed" and message in run.error
    assert "ghp-test-token" not in run.error


def test_shell_workflow_runs_as_written(test_database_url, django_user_model, github):
    """The workflow's "Add task" and "View tasks" lines, typed into `manage.py shell`."""
    django_user_model.objects.create_user(pk=1, username="admin", email="admin@example.com")
    snippet = "\n".join(
        [
            "user = User.objects.get(pk=1)",
            'tenant = Tenant.create(user, "demo", user.email)',
            'integration = Integration(name="github", tenant_id=tenant.id)',
            'integration.add_task(name="get_users", cron="* * * * *")',
            'Locker.add("test","value", tenant.id)',
            "from scheduler.bg_helper import BgHelper",
            "from scheduler.bg_helper import bg_app",
            "bg_app.open()",
            "[print(i) for i in BgHelper().list_jobs()]",
            "print('tenant-id', tenant.id, tenant.queue_name)",
        ]
    )
    env = {**os.environ, "DATABASE_URL": test_database_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell"],
        input=snippet,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr, result.stderr
    tenant = Tenant.objects.get(name="demo")
    assert f"tenant-id {tenant.id} {tenant.id}" in result.stdout
    task = Task.objects.get(tenant=tenant)
    assert (task.name, task.cron, task.integration.name) == ("get_users", "* * * * *", "github")
    assert Locker.get("test", tenant.id) == "value"
