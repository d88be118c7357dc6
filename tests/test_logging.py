"""Log lines emitted while a job runs say which tenant, Task, job and attempt."""

from __future__ import annotations

import logging

from integrations.models import Integration
from scheduler.logcontext import JobContextFilter
from scheduler.models import TaskRun
from scheduler.tick import run_tick
from tenants.models import Locker
from tests.fake_github import FakeGitHub, allow, member, serve


def test_job_log_lines_carry_tenant_task_job_and_attempt(run_worker, tenant, caplog, settings):
    caplog.handler.addFilter(JobContextFilter())
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    with serve(fake):
        allow(fake, settings)
        integration = Integration.objects.create(
            name="github", tenant=tenant, config={"org": "acme", "base_url": fake.base_url}
        )
        task = integration.add_task("get_users", "* * * * *")
        Locker.add("github_token", "secret-token-value", tenant.id)
        run_tick(task.next_run_at)
        with caplog.at_level(logging.INFO, logger="integrations"):
            run_worker(queues=[tenant.queue_name])
    run = TaskRun.objects.get()
    lines = [r for r in caplog.records if r.name == "integrations.github.tasks"]
    assert lines, "the github task logs what it fetched"
    expected = f"tenant={tenant.id} task={task.id} job={run.job_id} attempt=1"
    assert all(r.job_context == expected for r in lines)
    assert all("secret-token-value" not in r.getMessage() for r in caplog.records)
