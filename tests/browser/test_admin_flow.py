"""Admin in a real browser: author a task, see it run, and see nothing of another tenant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenants.models import Membership, Tenant
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


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


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

    # A task with an invalid cron: the error says what is wrong.
    page.goto(f"{base}/admin/scheduler/task/add/")
    pick(page, "integration", "acme")
    page.select_option("#id_name", "get_users")
    page.fill("#id_cron", "61 * * * *")
    page.wait_for_function(
        "document.getElementById('cron-description').textContent.includes('not a valid')"
    )
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    assert "is not a valid cron expression" in page.inner_text(".errorlist")
    shot(page, "task-invalid-cron")

    # Fixed: plain language and the next five runs appear as the user types.
    page.fill("#id_cron", "*/5 * * * *")
    page.wait_for_function(
        "document.getElementById('cron-description').textContent.includes('Every 5 minutes')"
    )
    assert page.locator("#cron-next-runs tbody tr").count() == 5
    shot(page, "task-cron-preview")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    task_url = page.url

    # Run it now from the list, then let a tenant worker run it.
    page.goto(f"{base}/admin/scheduler/task/")
    page.check("input[name=_selected_action]")
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

    page.goto(task_url)
    page.wait_for_selector("#run-history")
    assert page.inner_text("#run-history .run-status") == "succeeded"
    shot(page, "task-run-history")
    page.goto(f"{base}/admin/dashboard/")
    counts = page.inner_text("#queue-counts")
    assert "acme" in counts and "1" in counts
    shot(page, "dashboard")
    page.goto(f"{base}/admin/procrastinate/procrastinatejob/")
    assert "github.get_users" in page.content()
    shot(page, "jobs")

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
        assert "get_users [*/5" not in page.content(), path
    response = page.goto(task_url)
    assert response.status == 404
