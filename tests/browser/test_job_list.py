"""The job list and the dashboard's failures in a real browser at 1280x800, as a superuser.

Jobs ran on a real worker: some succeeded, some failed (two tasks, one of them three times
the same way), one waits, and the scheduler's maintenance job sits on queue ``scheduler``.
The job list shows status badges (failed in red, every label in words), fits the window,
hides the system job until its filter asks for it; the dashboard groups the failures by
task and error. Saves docs/screenshots/jobs.png and dashboard.png.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone
from procrastinate.contrib.django import app

from integrations.models import Integration
from scheduler.models import TaskRun
from scheduler.queues import SCHEDULER_QUEUE
from scheduler.runs import run_now
from tenants.models import Tenant
from tests.browser.test_admin_flow import assert_fits, log_in, shot

#: The background colour and text of each badge drawn in the page.
BADGES = """() => [...document.querySelectorAll("#result_list .mt-badge")].map((b) => ({
    status: [...b.classList].find((c) => c.startsWith("mt-badge--")),
    background: getComputedStyle(b).backgroundColor,
    text: b.innerText.trim(),
}))"""


def in_own_thread(function: Callable[..., Any], **kwargs: Any) -> None:
    """Call ``function`` in a thread of its own: Playwright's event loop holds this one, and
    a worker runs its own loop."""
    failures: list[BaseException] = []

    def call() -> None:
        try:
            function(**kwargs)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the worker did not finish in 2 minutes"
    if failures:
        raise failures[0]


@pytest.fixture
def jobs(clean_jobs, run_worker, probe_task, tenant, django_user_model):
    """Jobs of two tenants in every state worth seeing, and one system job."""
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-browser")
    acme = tenant
    globex = Tenant.create(acme.owner, "globex", "ops@globex.example")
    flaky = probe_task(kwargs={"fail_first": 9}, overlap="allow")
    broken = probe_task("30 * * * *", tenant_=globex, kwargs={"fail_first": 9})
    healthy = probe_task("15 * * * *")
    start = timezone.now()
    for index in range(3):
        run_now(flaky, now=start + dt.timedelta(seconds=index))
    run_now(broken, now=start)
    run_now(healthy, now=start)
    in_own_thread(run_worker, queues=[acme.queue_name, globex.queue_name])
    github = Integration.objects.create(name="github", tenant=acme, config={"org": "acme"})
    waiting = run_now(github.add_task("get_users", "0 * * * *"))  # no worker serves it yet
    system_job = app.configure_task("metronome.maintenance", queue=SCHEDULER_QUEUE).defer(
        timestamp=int(start.timestamp())
    )
    return {"acme": acme, "globex": globex, "waiting": waiting, "system_job": system_job}


def test_job_list_and_dashboard_at_1280(page, live_server, jobs):
    base = live_server.url
    log_in(page, base, "root")
    response = page.goto(f"{base}/favicon.ico")
    assert response.status == 200 and response.headers["content-type"] == "image/x-icon"

    page.goto(f"{base}/admin/procrastinate/procrastinatejob/")
    heads = assert_fits(page)
    assert [h.lower() for h in heads] == [
        "id",
        "task",
        "tenant (queue)",
        "status",
        "intended",
        "started",
        "finished",
        "duration",
        "attempts",
    ], heads
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 6  # five runs and the waiting one; the system job is hidden
    assert page.locator("#result_list", has_text="metronome.maintenance").count() == 0
    badges = page.evaluate(BADGES)
    by_status = {}
    for badge in badges:
        by_status.setdefault(badge["status"], set()).add((badge["background"], badge["text"]))
    assert set(by_status) == {"mt-badge--failed", "mt-badge--succeeded", "mt-badge--todo"}
    assert by_status["mt-badge--failed"] == {("rgb(198, 40, 40)", "Failed")}  # red
    assert {text for _, text in by_status["mt-badge--succeeded"]} == {"Succeeded"}
    assert {text for _, text in by_status["mt-badge--todo"]} == {"To do"}
    assert len({bg for colours in by_status.values() for bg, _ in colours}) == 3
    globex_row = page.locator("#result_list tbody tr", has_text="globex")
    assert globex_row.locator(".field-tenant_queue").inner_text().strip() == (
        f"globex ({jobs['globex'].queue_name})"
    )
    waiting = page.locator(
        "#result_list tbody tr", has=page.locator(f"a[href$='/{jobs['waiting'].job_id}/change/']")
    )
    assert waiting.locator(".field-started").inner_text().strip() == "—"
    assert waiting.locator(".field-task_display").inner_text().strip() == "github.get_users"
    shot(page, "jobs", full_page=True)

    # The filter shows the system job, and the list still fits.
    page.click("#changelist-filter a[href*='system=show']")
    page.wait_for_url("**system=show**")
    assert page.locator("#result_list tbody tr").count() == 7
    system_row = page.locator("#result_list tbody tr", has_text="metronome.maintenance")
    assert system_row.locator(".field-tenant_queue").inner_text().strip() == SCHEDULER_QUEUE
    assert_fits(page)

    # The dashboard groups the failures: one line per task and error, with its count.
    page.goto(f"{base}/admin/dashboard/")
    groups = page.locator("#failures tr.failure-group")
    assert groups.count() == 2
    texts = groups.all_inner_texts()
    assert all("RuntimeError: probe failure on attempt 1" in text for text in texts), texts
    assert not any("Traceback" in text for text in texts), texts
    counts = sorted(
        int(c.strip()) for c in page.locator("#failures .failure-count").all_inner_texts()
    )
    assert counts == [1, 3]
    assert page.locator("#failures .mt-badge--failed").count() == 2
    shot(page, "dashboard", full_page=True)

    # A group's link opens the list of exactly its runs.
    acme_group = page.locator("#failures tr.failure-group", has_text="acme")
    acme_group.locator("a.failure-runs").click()
    page.wait_for_url("**/admin/scheduler/taskrun/**")
    failed = TaskRun.objects.filter(tenant=jobs["acme"], status="failed").count()
    assert page.locator("#result_list tbody tr").count() == failed == 3
