"""Admin forms reject bad input with a message and save nothing."""

from __future__ import annotations

import pytest

from integrations.models import Integration
from scheduler.models import Task
from tenants.models import Locker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    return client


def task_form(integration: Integration, **overrides) -> dict:
    data = {
        "integration": integration.pk,
        "tenant": "",
        "name": "get_users",
        "cron": "* * * * *",
        "timezone": "",
        "kwargs": "{}",
        "enabled": "on",
        "catchup": "latest",
        "catchup_window": "1 00:00:00",
        "catchup_max": "100",
        "overlap": "skip",
        "max_attempts": "1",
        "retry_backoff": "00:01:00",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cron": "61 * * * *"}, "is not a valid cron expression"),
        ({"cron": "every minute"}, "has 2 fields"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"name": "get_repos"}, "Select a valid choice"),
        ({"name": "flaky"}, "has no task &#x27;flaky&#x27;"),
        ({"kwargs": "[1]"}, "kwargs must be a JSON object"),
        ({"timezone": "Mars/Base"}, "Select a valid choice"),
    ],
)
def test_task_add_form_rejects_bad_input(admin_client_, tenant, overrides, message):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = admin_client_.post("/admin/scheduler/task/add/", task_form(integration, **overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Task.objects.exists()


def test_task_add_form_rejects_tenant_mismatch(admin_client_, tenant, other_tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = admin_client_.post(
        "/admin/scheduler/task/add/", task_form(integration, tenant=other_tenant.pk)
    )
    assert "differs from its integration&#x27;s tenant" in response.content.decode()
    assert not Task.objects.exists()


def test_task_add_form_accepts_good_input(admin_client_, tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = admin_client_.post("/admin/scheduler/task/add/", task_form(integration))
    assert response.status_code == 302
    task = Task.objects.get()
    assert task.tenant == tenant and task.next_run_at is not None


def test_integration_form_rejects_unknown_type(admin_client_, tenant):
    response = admin_client_.post(
        "/admin/integrations/integration/add/",
        {"tenant": tenant.pk, "name": "gitlab", "config": "{}", "enabled": "on"},
    )
    assert "Select a valid choice" in response.content.decode()
    assert not Integration.objects.exists()


def test_integration_form_rejects_bad_config(admin_client_, tenant):
    response = admin_client_.post(
        "/admin/integrations/integration/add/",
        {"tenant": tenant.pk, "name": "github", "config": '{"org": 5}', "enabled": "on"},
    )
    assert "must be a GitHub organisation name" in response.content.decode()
    assert not Integration.objects.exists()


@pytest.mark.parametrize("existing", [False, True])
def test_the_locker_form_refuses_a_value_too_short_to_be_masked(admin_client_, tenant, existing):
    locker = Locker.add("github_token", "ghp_kept_value", tenant.id) if existing else None
    url = f"/admin/tenants/locker/{locker.pk}/change/" if locker else "/admin/tenants/locker/add/"
    response = admin_client_.post(url, {"tenant": tenant.pk, "key": "github_token", "value": "abc"})

    assert response.status_code == 200
    assert "at least 4 characters long (this one has 3)" in response.content.decode()
    stored = Locker.get("github_token", tenant.id)
    assert stored == ("ghp_kept_value" if existing else None)


def test_locker_admin_never_shows_the_value(admin_client_, tenant):
    locker = Locker.add("github_token", "ghp_never_shown", tenant.id)
    for url in ("/admin/tenants/locker/", f"/admin/tenants/locker/{locker.pk}/change/"):
        page = admin_client_.get(url).content.decode()
        assert "github_token" in page
        assert "ghp_never_shown" not in page
    # Saving without typing a value keeps the stored one.
    response = admin_client_.post(
        f"/admin/tenants/locker/{locker.pk}/change/",
        {"tenant": tenant.pk, "key": "github_token", "value": ""},
    )
    assert response.status_code == 302
    assert Locker.get("github_token", tenant.id) == "ghp_never_shown"
