"""Admin in a real browser at 1280x800: author a task, see it run, read the pages at a glance.

It logs in, creates a tenant, an integration and a task with an invalid cron (the preview
shows the error in the error style, no table), fixes it (one column for UTC, two for
another zone), runs it now against a local GitHub that first answers with a rate limit,
lets a tenant worker run it, and reads the task page (run history before the fields, the
attempts of the retried run, durations), the task list (badges, no ✗ on healthy rows,
nothing cut off); then a viewer of the tenant sees no actions and no save buttons, and
another tenant's staff user sees none of it. It refreshes docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tenants.models import Membership, Tenant
from tests.browser.conftest import VIEWPORT
from tests.fake_github import FakeGitHub, allow, member, serve

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"


@pytest.fixture
def github(settings, monkeypatch):
    fake = FakeGitHub(members={"acme": [member(i, f"dev{i}") for i in range(1, 4)]})
    with serve(fake):
        allow(fake, settings, monkeypatch)  # monkeypatch: the env of the worker subprocess
        yield fake


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-browser")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def pick(page, field: str, text: str) -> None:
    """Choose ``text`` in an admin autocomplete (select2) field."""
    page.click(f"#id_{field} + .select2 .select2-selection")
    page.fill(".select2-search__field", text)
    page.click(f".select2-results__option:has-text('{text}')")


def shot(page, name: str, full_page: bool = False) -> None:
    """Save docs/screenshots/<name>.png: the screen as an operator sees it, or the page."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


#: How format_duration writes a duration (67 ms, 1.2 s, 3 min 5 s, 2 h 4 min), or a dash.
DURATION = re.compile(r"(\d+ ms|<1 ms|\d+(\.\d)? s|\d+ min( \d+ s)?|\d+ h( \d+ min)?|—)")

#: Whether an element's text is drawn in the admin's error colour (Django's --error-fg).
IN_ERROR_COLOUR = """(selector) => {
    const probe = document.createElement("span");
    probe.style.color = "var(--error-fg)";
    document.body.appendChild(probe);
    const expected = getComputedStyle(probe).color;
    probe.remove();
    return getComputedStyle(document.querySelector(selector)).color === expected;
}"""

#: Where a changelist's columns end compared with its scrolling box and the window.
TABLE_FIT = """() => {
    const box = document.querySelector("#changelist .results");
    const heads = [...document.querySelectorAll("#result_list thead th")];
    return {
        overflow: box.scrollWidth - box.clientWidth,
        rightmost: Math.max(...heads.map((th) => th.getBoundingClientRect().right)),
        boxRight: box.getBoundingClientRect().right,
        window: window.innerWidth,
        heads: heads.map((th) => th.innerText.trim()).filter(Boolean),
    };
}"""


#: How far a box's widest table reaches past the box's right edge (0 or less: it fits).
PAST_THE_EDGE = """(selector) => {
    const box = document.querySelector(selector);
    const right = Math.max(...[...box.querySelectorAll("table")].map(
        (t) => t.getBoundingClientRect().right));
    return Math.max(right - box.getBoundingClientRect().right, box.scrollWidth - box.clientWidth);
}"""


def assert_fits(page) -> list[str]:
    """No column of the changelist is cut off at this width; the header texts."""
    fit = page.evaluate(TABLE_FIT)
    assert fit["overflow"] <= 0, fit  # no horizontal scrolling inside the list
    assert fit["rightmost"] <= min(fit["boxRight"], fit["window"]) + 0.5, fit
    return fit["heads"]


def test_author_run_and_isolation(
    page, live_server, django_user_model, github, clean_jobs, test_database_url
):
    base = live_server.url
    django_user_model.objects.create_superuser("root", "root@example.com", "pw-for-browser")
    other = django_user_model.objects.create_user(
        "globex-admin", "g@example.com", "pw-for-browser", is_staff=True
    )
    Tenant.create(other, "globex", "ops@globex.example")

    log_in(page, base, "root")
    # A tenant, an integration pointing at the local GitHub, and its token.
    page.goto(f"{base}/admin/tenants/tenant/add/")
    page.fill("#id_name", "acme")
    page.fill("#id_email", "ops@acme.example")
    pick(page, "owner", "root")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    tenant = Tenant.objects.get(name="acme")
    assert tenant.timezone == "UTC"
    Membership.objects.get_or_create(
        tenant=tenant, user__username="root", defaults={"user_id": tenant.owner_id, "role": "owner"}
    )

    page.goto(f"{base}/admin/integrations/integration/add/")
    page.select_option("#id_tenant", str(tenant.pk))
    page.select_option("#id_name", "github")
    page.fill("#id_config", json.dumps({"org": "acme", "base_url": github.base_url}))
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")

    page.goto(f"{base}/admin/tenants/locker/add/")
    page.select_option("#id_tenant", str(tenant.pk))
    page.fill("#id_key", "github_token")
    page.fill("#id_value", "ghp-browser-secret")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert "ghp-browser-secret" not in page.content()

    # A task with an invalid cron: the preview says what is wrong, as an error, no table.
    page.goto(f"{base}/admin/scheduler/task/add/")
    pick(page, "integration", "acme")
    page.select_option("#id_name", "get_users")
    page.fill("#id_cron", "61 * * * *")
    page.wait_for_function(
        "document.getElementById('cron-description').textContent.includes('not a valid')"
    )
    assert page.get_attribute("#cron-description", "class") == "errornote"
    assert page.evaluate(IN_ERROR_COLOUR, "#cron-description")
    assert not page.is_visible("#cron-next-runs")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "is not a valid cron expression" in page.inner_text(".errorlist")
    page.wait_for_function("document.getElementById('cron-description').className")
    assert page.evaluate(IN_ERROR_COLOUR, "#cron-description")
    assert not page.is_visible("#cron-next-runs")
    shot(page, "task-invalid-cron")

    # Fixed: plain language and the next five runs; one column, the tenant's zone being UTC.
    page.fill("#id_cron", "*/5 * * * *")
    page.wait_for_function(
        "document.getElementById('cron-description').textContent.includes('Every 5 minutes')"
    )
    assert not page.evaluate(IN_ERROR_COLOUR, "#cron-description")
    assert page.locator("#cron-next-runs tbody tr").count() == 5
    assert page.locator("#cron-next-runs th:visible").count() == 1
    assert page.locator("#cron-next-runs tbody tr:first-child td").count() == 1
    # Another zone: its times and UTC's, side by side.
    page.select_option("#id_timezone", "Europe/Paris")
    page.wait_for_function(
        "document.querySelectorAll('#cron-next-runs tbody tr:first-child td').length === 2"
    )
    assert page.locator("#cron-next-runs th:visible").count() == 2
    assert "Europe/Paris" in page.text_content("#cron-next-runs thead")
    shot(page, "task-cron-preview")
    page.select_option("#id_timezone", "")  # back to the tenant's zone
    page.wait_for_function(
        "document.querySelectorAll('#cron-next-runs tbody tr:first-child td').length === 1"
    )
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    task_url = page.url
    [integration] = tenant.integrations.all()
    paused = integration.add_task("get_users", "0 3 * * *")
    paused.pause("vendor maintenance")

    # Run it now from the list; GitHub first answers with a rate limit, so the worker
    # tries twice: the rate-limited attempt, then the one that succeeds.
    github.replies.append((429, {"Retry-After": "0"}, {"message": "API rate limit exceeded"}))
    page.goto(f"{base}/admin/scheduler/task/")
    page.check(f"input[name=_selected_action][value='{task_url.split('/')[-3]}']")
    page.select_option("select[name=action]", "run_tasks_now")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    assert "1 run(s) started" in page.inner_text(".messagelist")
    worker = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "procrastinate",
            "worker",
            "--one-shot",
            f"--queues={tenant.pk}",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": test_database_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr

    # The task page opens on its run history, above the fold and before the fields.
    page.goto(task_url)
    history = page.locator("#run-history")
    top = history.bounding_box()["y"]
    assert top < VIEWPORT["height"] / 2, top
    assert top < page.locator(".field-cron").bounding_box()["y"]
    assert page.locator("#run-history tr.mt-run").count() == 1
    assert page.inner_text("#run-history tr.mt-run .run-status") == "Succeeded"
    attempts = page.locator("#run-history tr.mt-attempt")
    assert attempts.count() == 2
    assert attempts.nth(0).is_visible() and attempts.nth(1).is_visible()
    first, second = attempts.nth(0).inner_text(), attempts.nth(1).inner_text()
    assert "rate limit reached (HTTP 429)" in first and "retried" in first
    assert "Succeeded" in second and "rate limit" not in second
    # The last error stays in the run's row although the run succeeded.
    assert "rate limit" in page.inner_text("#run-history tr.mt-run .mt-error")
    assert page.evaluate(PAST_THE_EDGE, "#run-history") <= 0.5  # no column cut off
    durations = page.locator("#run-history .mt-duration").all_inner_texts()
    assert len(durations) == 3, durations
    assert all(DURATION.fullmatch(text.strip()) for text in durations), durations
    shot(page, "task-run-history")

    # The task list fits 1280 px and shows only what is unusual.
    page.goto(f"{base}/admin/scheduler/task/")
    heads = assert_fits(page)
    assert [h.lower() for h in heads[-3:]] == ["next run", "missed", "skipped"], heads
    assert page.locator("#result_list img[src*='icon-no']").count() == 0  # no ✗
    ran = page.locator("#result_list tr", has_text="*/5 * * * *")
    assert ran.locator(".mt-badge--succeeded").count() == 1
    assert ran.locator(".mt-badge--paused").count() == 0
    waiting = page.locator("#result_list tr", has_text="0 3 * * *")
    assert waiting.locator(".mt-badge--paused").count() == 1
    shot(page, "task-list")
    page.goto(f"{base}/admin/scheduler/taskrun/")
    assert_fits(page)
    assert page.locator("#result_list img[src*='icon-no']").count() == 0

    page.goto(f"{base}/admin/dashboard/")
    assert "acme" in page.inner_text("#content")
    page.goto(f"{base}/admin/procrastinate/procrastinatejob/")
    assert "github.get_users" in page.content()

    # A viewer of acme reads everything, with no actions and no save buttons.
    viewer = django_user_model.objects.create_user(
        "acme-viewer", "v@example.com", "pw-for-browser", is_staff=True
    )
    Membership.objects.create(tenant=tenant, user=viewer, role="viewer")
    page.context.clear_cookies()
    log_in(page, base, "acme-viewer")
    for path in ("/admin/scheduler/task/", "/admin/procrastinate/procrastinatejob/"):
        page.goto(f"{base}{path}")
        assert "acme" in page.inner_text("#result_list"), path
        assert page.locator("select[name=action]").count() == 0, path
        assert page.locator("input[name=_selected_action]").count() == 0, path
        assert page.locator(".object-tools .addlink").count() == 0, path
    page.goto(task_url)
    assert page.locator("#run-history tr.mt-attempt").count() == 2
    assert page.locator(".submit-row input[type=submit]").count() == 0
    assert page.locator(".deletelink").count() == 0
    page.click("#run-history tr.mt-run a:has-text('job')")
    page.wait_for_url("**/procrastinate/procrastinatejob/*/change/")
    assert page.locator(".submit-row input[type=submit]").count() == 0
    page.goto(f"{base}/admin/scheduler/taskrun/")
    page.click("#result_list tbody tr a >> nth=0")
    page.wait_for_selector("#run-attempts")
    assert page.locator("#run-attempts tr.mt-attempt").count() == 2
    assert "rate limit reached" in page.inner_text("#run-attempts")
    assert page.evaluate(PAST_THE_EDGE, "#content-main") <= 0.5
    assert page.locator(".submit-row input[type=submit]").count() == 0

    # Another tenant's staff user sees none of it.
    page.context.clear_cookies()
    log_in(page, base, "globex-admin")
    for path in (
        "/admin/scheduler/task/",
        "/admin/dashboard/",
        "/admin/scheduler/taskrun/",
        "/admin/procrastinate/procrastinatejob/",
        "/admin/integrations/integration/",
    ):
        page.goto(f"{base}{path}")
        assert "acme" not in page.content(), path
        assert "*/5 * * * *" not in page.content(), path
    response = page.goto(task_url)
    assert response.status == 404
