"""Models, the shell API and their validation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from integrations.models import Integration
from scheduler.models import Task
from tenants.models import Locker, Membership, Tenant

pytestmark = pytest.mark.django_db
UTC = dt.UTC


def test_tenant_create_makes_the_user_its_owner(user):
    tenant = Tenant.create(user, "demo", user.email)
    assert tenant.owner == user
    assert tenant.timezone == "UTC"
    assert tenant.queue_name == str(tenant.id)
    membership = Membership.objects.get(tenant=tenant)
    assert (membership.user, membership.role) == (user, "owner")


def test_tenant_create_rejects_bad_input_and_saves_nothing(user):
    with pytest.raises(ValidationError) as exc:
        Tenant.create(user, "demo", "not-an-email", timezone="Mars/Olympus")
    assert "email" in exc.value.message_dict
    assert "not a known IANA time zone" in str(exc.value.message_dict["timezone"])
    assert not Tenant.objects.exists() and not Membership.objects.exists()


def test_locker_add_replaces_get_and_remove(tenant):
    Locker.add("github_token", "first-secret", tenant.id)
    Locker.add("github_token", "second-secret", tenant.id)
    assert Locker.objects.filter(tenant=tenant).count() == 1
    assert Locker.get("github_token", tenant.id) == "second-secret"
    assert Locker.get("missing", tenant.id, default="d") == "d"
    assert Locker.remove("github_token", tenant.id) is True
    assert Locker.get("github_token", tenant.id) is None
    assert Locker.remove("github_token", tenant.id) is False


def test_locker_value_stays_out_of_str_and_repr(tenant):
    locker = Locker.add("github_token", "ghp_supersecret", tenant.id)
    assert "ghp_supersecret" not in str(locker)
    assert "ghp_supersecret" not in repr(locker)


def test_locker_rejects_unknown_tenant_and_empty_value(tenant):
    with pytest.raises(ValidationError, match="no tenant with id 999999"):
        Locker.add("k", "value", 999999)
    with pytest.raises(ValidationError, match="non-empty string"):
        Locker.add("k", "", tenant.id)


@pytest.mark.parametrize("value", ["a", "ab", "abc"])
def test_a_locker_value_too_short_to_be_masked_is_refused_and_nothing_is_stored(tenant, value):
    """Errors and logs are kept free of secrets by masking each stored value; a value of
    one to three characters cannot be masked (it would blank ordinary letters), so it is
    refused, through the Python API and through save() alike."""
    with pytest.raises(
        ValidationError, match=f"at least 4 characters long .this one has {len(value)}\\)"
    ):
        Locker.add("k", value, tenant.id)
    with pytest.raises(ValidationError, match="at least 4 characters"):
        Locker(tenant=tenant, key="k", value=value).save()
    assert not Locker.objects.exists()
    assert Locker.get("k", tenant.id) is None
    Locker.add("k", "abcd", tenant.id)  # four characters: masked, so accepted
    assert Locker.get("k", tenant.id) == "abcd"


def test_add_task_on_unsaved_integration_saves_both(tenant):
    integration = Integration(name="github", tenant_id=tenant.id)
    task = integration.add_task(name="get_users", cron="* * * * *")
    assert integration.pk is not None
    assert task.pk is not None and task.tenant_id == tenant.id
    assert task.kwargs == {} and task.enabled
    assert task.next_run_at is not None


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "is not a valid cron expression"),
        ({"cron": "* * *"}, "cron", "has 3 fields"),
        ({"cron": "0 0 31 2 *"}, "cron", "never fires"),
        ({"name": "get_repos"}, "name", "has no task 'get_repos'. Its tasks: get_users"),
        ({"kwargs": [1, 2]}, "kwargs", "kwargs must be a JSON object"),
        ({"kwargs": {"page": 3}}, "kwargs", "do not fit task 'github.get_users'"),
        ({"timezone": "Nowhere/City"}, "timezone", "not a known IANA time zone"),
    ],
)
def test_add_task_rejects_bad_input_and_saves_nothing(tenant, options, field, message):
    integration = Integration(name="github", tenant_id=tenant.id)
    arguments = {"name": "get_users", "cron": "* * * * *", **options}
    with pytest.raises(ValidationError) as exc:
        integration.add_task(**arguments)
    assert message in " ".join(exc.value.message_dict[field])
    assert integration.pk is None
    assert not Integration.objects.exists() and not Task.objects.exists()


def test_unknown_integration_type_is_rejected(tenant):
    integration = Integration(name="gitlab", tenant_id=tenant.id)
    with pytest.raises(ValidationError) as exc:
        integration.add_task(name="get_users", cron="* * * * *")
    message = str(exc.value)
    assert "Unknown integration type 'gitlab'. Known types: " in message
    assert "github" in message.split("Known types: ")[1]  # the types one could use instead
    assert not Integration.objects.exists()


def test_unknown_option_is_a_validation_error(tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    with pytest.raises(ValidationError, match="Unknown option 'crn'"):
        integration.add_task(name="get_users", cron="* * * * *", crn="x")


def test_task_tenant_must_match_its_integration(tenant, other_tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    task = Task(integration=integration, tenant=other_tenant, name="get_users", cron="* * * * *")
    with pytest.raises(ValidationError) as exc:
        task.full_clean()
    assert "differs from its integration's tenant" in str(exc.value.message_dict["tenant"])
    with pytest.raises(ValidationError):
        task.save()
    assert not Task.objects.exists()


def test_github_config_is_validated(tenant):
    integration = Integration(
        name="github", tenant=tenant, config={"org": "", "base_url": "ftp://x", "colour": 1}
    )
    with pytest.raises(ValidationError) as exc:
        integration.full_clean()
    text = " ".join(exc.value.message_dict["config"])
    assert "Unknown github config keys: colour" in text
    assert "'org' must be a GitHub organisation name" in text
    assert "'base_url' must be an http(s) URL" in text


def test_next_run_at_is_computed_on_save_and_follows_edits(tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    now = dt.datetime(2026, 5, 4, 10, 0, 30, tzinfo=UTC)
    task = Task(integration=integration, name="get_users", cron="*/5 * * * *")
    task.save(now=now)
    assert task.next_run_at == dt.datetime(2026, 5, 4, 10, 5, tzinfo=UTC)
    task.cron = "0 12 * * *"
    task.save(now=now)
    assert Task.objects.get(pk=task.pk).next_run_at == dt.datetime(2026, 5, 4, 12, tzinfo=UTC)
    task.enabled = False
    task.save(now=now)
    assert Task.objects.get(pk=task.pk).next_run_at is None


def test_cron_is_read_in_the_tenant_time_zone(user):
    tenant = Tenant.create(user, "berlin", "b@example.com", timezone="Europe/Berlin")
    integration = Integration.objects.create(name="github", tenant=tenant)
    task = Task(integration=integration, name="get_users", cron="0 9 * * *")
    task.save(now=dt.datetime(2026, 7, 1, 0, 0, tzinfo=UTC))
    assert task.next_run_at == dt.datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 CEST


def test_add_task_accepts_policies(tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    task = integration.add_task(
        "get_users",
        "*/5 * * * *",
        catchup="all",
        overlap="allow",
        max_attempts=3,
        retry_backoff=dt.timedelta(seconds=5),
        timezone="Europe/Berlin",
        kwargs={},
    )
    task.refresh_from_db()
    assert (task.catchup, task.overlap, task.max_attempts) == ("all", "allow", 3)
