"""The shell workflow when it is run again: identical Tasks, a tenant's existing integration,
and errors that must not hide one another. Bad input is refused with a message saying what
to do, and nothing is half-saved."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from integrations.models import Integration
from scheduler.models import IDENTICAL_TASK_CONSTRAINT, Task
from tenants.models import Membership, Tenant

ROOT = Path(__file__).resolve().parent.parent


def snippet_integration(tenant: Tenant) -> Integration:
    """The README's line, as typed again in a new shell."""
    return Integration(name="github", tenant_id=tenant.id, config={"org": "my-org"})


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return " ".join(m for ms in exc.value.message_dict.values() for m in ms)


# Identical Tasks -------------------------------------------------------------------------


@pytest.mark.django_db
def test_adding_the_same_task_twice_is_refused_naming_the_existing_one(tenant):
    integration = snippet_integration(tenant)
    first = integration.add_task("get_users", "* * * * *")

    with pytest.raises(ValidationError) as exc:
        integration.add_task("get_users", "* * * * *")

    [message] = exc.value.message_dict[NON_FIELD_ERRORS]
    assert f"already has an identical task: task {first.pk}, get_users" in message
    assert "get_or_add_task" in message
    assert list(Task.objects.values_list("pk", flat=True)) == [first.pk]


@pytest.mark.django_db
def test_identity_is_name_cron_time_zone_and_kwargs(tenant, probe_task):
    task = probe_task("*/5 * * * *", kwargs={"fail_first": 1}, timezone="Europe/Berlin")
    integration = task.integration
    same = {"kwargs": {"fail_first": 1}, "timezone": "Europe/Berlin"}

    with pytest.raises(ValidationError, match=f"identical task: task {task.pk}"):
        integration.add_task("flaky", "*/5 * * * *", **same, max_attempts=3, enabled=False)

    # Any one of the four differing makes another Task.
    integration.add_task("flaky", "*/10 * * * *", **same)
    integration.add_task("flaky", "*/5 * * * *", kwargs={"fail_first": 2}, timezone="Europe/Berlin")
    integration.add_task("flaky", "*/5 * * * *", kwargs={"fail_first": 1})
    assert Task.objects.count() == 4


@pytest.mark.django_db
def test_editing_a_task_into_a_copy_of_another_is_refused(tenant):
    integration = snippet_integration(tenant)
    hourly = integration.add_task("get_users", "0 * * * *")
    daily = integration.add_task("get_users", "0 0 * * *")

    daily.cron = "0 * * * *"
    with pytest.raises(ValidationError, match=f"identical task: task {hourly.pk}"):
        daily.full_clean()
    daily.refresh_from_db()
    daily.full_clean()  # itself is not a copy of itself
    assert daily.cron == "0 0 * * *"


@pytest.mark.django_db
def test_the_database_refuses_an_identical_task_that_skips_validation(tenant):
    task = snippet_integration(tenant).add_task("get_users", "* * * * *", kwargs={})
    copy = Task(integration=task.integration, name="get_users", cron="* * * * *", kwargs={})
    with pytest.raises(IntegrityError, match=IDENTICAL_TASK_CONSTRAINT), transaction.atomic():
        copy.save()
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_kwargs_too_large_for_an_index_row_are_still_stored(tenant, probe_task):
    """The constraint indexes a hash of the kwargs: a btree row holds at most 2.7 kB."""
    blob = os.urandom(8000).hex()  # 16 kB that do not compress below 2.7 kB
    integration = probe_task().integration
    task = Task(integration=integration, name="flaky", cron="0 * * * *", kwargs={"x": blob})
    task.save()  # save() does not check kwargs against the task: a stand-in for a big valid one
    assert Task.objects.get(pk=task.pk).kwargs == {"x": blob}


# get_or_add_task -------------------------------------------------------------------------


@pytest.mark.django_db
def test_get_or_add_task_returns_the_existing_task_unchanged(tenant):
    integration = snippet_integration(tenant)

    task, created = integration.get_or_add_task("get_users", "* * * * *")
    assert created and task.pk is not None and integration.pk is not None

    again, created = integration.get_or_add_task("get_users", "* * * * *", max_attempts=5)
    assert (again.pk, created) == (task.pk, False)
    assert Task.objects.get().max_attempts == 1  # options apply to a new Task only

    other, created = integration.get_or_add_task("get_users", "0 * * * *", max_attempts=5)
    assert created and other.pk != task.pk and other.max_attempts == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "is not a valid cron expression"),
        ({"name": "get_repos"}, "name", "has no task 'get_repos'"),
        ({"kwargs": ["x"]}, "kwargs", "kwargs must be a JSON object"),
        ({"kwargs": {"page": object()}}, "kwargs", "do not fit task"),
        ({"timezone": None}, "timezone", "The time zone cannot be None"),
    ],
)
def test_get_or_add_task_refuses_bad_input_and_saves_nothing(tenant, arguments, field, message):
    integration = snippet_integration(tenant)
    with pytest.raises(ValidationError) as exc:
        integration.get_or_add_task(**{"name": "get_users", "cron": "* * * * *", **arguments})
    assert message in " ".join(exc.value.message_dict[field])
    assert integration.pk is None
    assert not Integration.objects.exists() and not Task.objects.exists()


@pytest.mark.django_db
def test_get_or_add_task_refuses_an_unknown_option(tenant):
    integration = snippet_integration(tenant)
    integration.add_task("get_users", "* * * * *")
    with pytest.raises(ValidationError, match="Unknown option 'paused_at'"):
        integration.get_or_add_task("get_users", "* * * * *", paused_at="2026-01-01")


# Racing: validation passes in both, the database decides --------------------------------


def _insert_and_hold(task_data: dict, inserted: threading.Event, failures: list) -> None:
    """In a transaction of its own: insert a Task, wait until another session blocks on it,
    then commit."""
    try:
        with transaction.atomic():
            Task.objects.create(**task_data)
            inserted.set()
            with connection.cursor() as cursor:
                for _ in range(200):
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                    if cursor.fetchone()[0]:
                        break
                    threading.Event().wait(0.05)
                else:
                    failures.append("no session waited for the inserted row")
    except Exception as exc:  # reported by the test
        failures.append(exc)
    finally:
        inserted.set()
        connection.close()


@pytest.mark.parametrize("call", ["add_task", "get_or_add_task"])
def test_a_concurrent_identical_task_is_a_validation_error_or_the_existing_task(
    transactional_db, tenant, call
):
    integration = Integration.objects.create(name="github", tenant=tenant)
    data = {"integration": integration, "name": "get_users", "cron": "* * * * *"}
    inserted, failures = threading.Event(), []
    other = threading.Thread(target=_insert_and_hold, args=(data, inserted, failures))
    other.start()
    try:
        assert inserted.wait(30)
        if call == "add_task":
            with pytest.raises(ValidationError, match="already has an identical task: task "):
                integration.add_task("get_users", "* * * * *")
        else:
            task, created = integration.get_or_add_task("get_users", "* * * * *")
            assert not created and task.pk == Task.objects.get().pk
    finally:
        other.join(30)
    assert not failures, failures
    assert Task.objects.count() == 1


# The tenant's existing integration ---------------------------------------------------------


@pytest.mark.django_db
def test_running_the_snippet_again_says_how_to_add_to_the_existing_integration(tenant):
    snippet_integration(tenant).add_task(name="get_users", cron="* * * * *")

    again = snippet_integration(tenant)
    with pytest.raises(ValidationError) as exc:
        again.add_task(name="get_users", cron="0 * * * *")

    [message] = exc.value.message_dict[NON_FIELD_ERRORS]
    assert f"Tenant {tenant.id} already has a github integration" in message
    assert again.pk is None
    assert Integration.objects.count() == 1 and Task.objects.count() == 1
    # The call it names works as written.
    suggested = re.search(r"(Integration\.objects\.get\(.*?\)\.add_task\(.*?\))", message)
    assert suggested, message
    added = eval(suggested.group(1), {"Integration": Integration})
    assert (added.integration_id, added.cron) == (Integration.objects.get().pk, "0 * * * *")


@pytest.mark.django_db
def test_a_cron_error_is_not_hidden_by_the_existing_integration(tenant):
    snippet_integration(tenant).add_task(name="get_users", cron="* * * * *")

    with pytest.raises(ValidationError) as exc:
        snippet_integration(tenant).add_task(name="get_users", cron="61 * * * *")

    assert "is not a valid cron expression" in " ".join(exc.value.message_dict["cron"])
    assert "already has a github integration" in errors_of(exc)
    assert Integration.objects.count() == 1 and Task.objects.count() == 1


@pytest.mark.django_db
def test_every_error_of_a_new_integration_and_its_task_is_reported_at_once(tenant):
    integration = Integration(name="github", tenant_id=tenant.id, config={"colour": "red"})
    with pytest.raises(ValidationError) as exc:
        integration.add_task(name="get_repos", cron="* * *", kwargs=[1])
    found = exc.value.message_dict
    assert "Unknown github config keys: colour" in " ".join(found["config"])
    assert "has no task 'get_repos'" in " ".join(found["name"])
    assert "has 3 fields" in " ".join(found["cron"])
    assert "kwargs must be a JSON object" in " ".join(found["kwargs"])
    assert not Integration.objects.exists() and not Task.objects.exists()


@pytest.mark.django_db
def test_another_tenants_integration_of_the_same_type_is_no_obstacle(tenant, other_tenant):
    snippet_integration(other_tenant).add_task(name="get_users", cron="* * * * *")
    task = snippet_integration(tenant).add_task(name="get_users", cron="* * * * *")
    assert task.tenant_id == tenant.id and Task.objects.count() == 2


# Admin -------------------------------------------------------------------------------------


def task_form(integration: Integration, **overrides) -> dict:
    return {
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
        **overrides,
    }


@pytest.mark.django_db
def test_admin_form_shows_the_identical_task_error_on_the_form(client, tenant, user):
    user.is_staff = True  # the tenant's owner, not a superuser
    user.save()
    client.force_login(user)
    existing = snippet_integration(tenant).add_task("get_users", "* * * * *")

    response = client.post("/admin/scheduler/task/add/", task_form(existing.integration))

    assert response.status_code == 200
    page = response.content.decode()
    assert "errornote" in page and f"identical task: task {existing.pk}" in page
    assert Task.objects.count() == 1
    # Editing another task into a copy shows it too.
    other = existing.integration.add_task("get_users", "0 * * * *")
    response = client.post(
        f"/admin/scheduler/task/{other.pk}/change/", task_form(existing.integration)
    )
    assert response.status_code == 200
    assert f"identical task: task {existing.pk}" in response.content.decode()
    other.refresh_from_db()
    assert other.cron == "0 * * * *"


@pytest.mark.django_db
def test_another_tenants_staff_learns_nothing_from_the_identical_task_check(
    client, tenant, other_tenant, django_user_model
):
    """A staff user of globex posts acme's integration with acme's task's name and cron."""
    existing = snippet_integration(tenant).add_task("get_users", "* * * * *")
    intruder = django_user_model.objects.create_user("mallory", "m@example.com", is_staff=True)
    Membership.objects.create(tenant=other_tenant, user=intruder, role="admin")
    client.force_login(intruder)

    response = client.post("/admin/scheduler/task/add/", task_form(existing.integration))

    page = response.content.decode()
    assert response.status_code == 200
    assert "identical task" not in page and "get_users with cron" not in page
    assert Task.objects.count() == 1


# The migration, on a database that already holds identical Tasks ----------------------------


@pytest.mark.django_db
def test_the_constraint_migration_stops_on_existing_copies_naming_them(tenant):
    from django.apps import apps

    integration = snippet_integration(tenant)
    first = integration.add_task("get_users", "* * * * *")
    with connection.cursor() as cursor:  # as before the constraint; undone with the test
        cursor.execute(f'DROP INDEX "{IDENTICAL_TASK_CONSTRAINT}"')
    copies = [
        Task.objects.create(integration=integration, name="get_users", cron="* * * * *")
        for _ in range(2)
    ]
    integration.add_task("get_users", "0 * * * *")  # not a copy
    migration = importlib.import_module("scheduler.migrations.0011_task_unique_task_schedule")

    with pytest.raises(CommandError) as exc:
        migration.refuse_identical_tasks(apps, None)

    message = str(exc.value)
    ids = ", ".join(str(pk) for pk in [first.pk, *(c.pk for c in copies)])
    assert f"tasks {ids} (integration {integration.pk}, get_users [* * * * *])" in message
    assert f"Task.objects.filter(pk__in={[c.pk for c in copies]}).delete()" in message
    assert Task.objects.count() == 4  # nothing deleted for the operator


# The README, typed into the shell twice ----------------------------------------------------


def readme_block(after: str) -> str:
    """The first ```python block of README.md after the line ``after``."""
    text = (ROOT / "README.md").read_text()
    rest = text[text.index(after) :]
    block = re.search(r"```python\n(.*?)```", rest, re.S)
    assert block, f"no python block after {after!r} in README.md"
    return "\n".join(line.strip() for line in block.group(1).splitlines())


def shell(code: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        cwd=ROOT,
        timeout=120,
    )


def test_readme_workflow_run_twice_then_its_advice(test_database_url, django_user_model):
    django_user_model.objects.create_user(pk=1, username="admin", email="admin@example.com")
    workflow = readme_block("## The workflow")

    first = shell(workflow, test_database_url)
    assert first.returncode == 0, first.stderr

    again = workflow.replace(
        'tenant = Tenant.create(user, "demo", user.email)',
        'tenant = Tenant.objects.get(name="demo")',
    )
    second = shell(again, test_database_url)
    assert second.returncode != 0
    assert "ValidationError" in second.stderr
    assert "already has a github integration" in second.stderr
    assert "Integration.objects.get(tenant_id=" in second.stderr

    advice = readme_block("Add further tasks to")
    third = shell('tenant = Tenant.objects.get(name="demo")\n' + advice, test_database_url)
    assert third.returncode == 0, third.stderr
    tenant = Tenant.objects.get(name="demo")
    crons = sorted(Task.objects.filter(tenant=tenant).values_list("cron", flat=True))
    assert crons == ["* * * * *", "0 * * * *"]
    assert Integration.objects.filter(tenant=tenant).count() == 1


@pytest.mark.parametrize("kwargs", [{"\x00": None}, {"since": "a\x00b"}, {"x": ["\x00"]}])
def test_kwargs_holding_a_nul_character_are_refused_with_a_message(db, tenant, kwargs):
    integration = Integration(name="github", tenant=tenant, config={"org": "acme"})
    with pytest.raises(ValidationError) as refused:
        integration.add_task("get_users", "* * * * *", kwargs=kwargs)
    assert "NUL" in str(refused.value)
    assert not Task.objects.exists() and not Integration.objects.exists()
