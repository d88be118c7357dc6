"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from procrastinate.contrib.django import app

PROBE_RESULTS: list[int] = []


@app.task(name="tests.add", queue="tests")
def add(a: int, b: int) -> int:
    """A job for tests: its side effect shows the worker really ran it."""
    PROBE_RESULTS.append(a + b)
    return a + b


@pytest.fixture
def clean_jobs(transactional_db) -> None:
    """Empty procrastinate's tables: Django's flush skips them (they are not managed)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_periodic_defers, procrastinate_workers "
            "RESTART IDENTITY CASCADE"
        )


@pytest.fixture
def run_worker(clean_jobs) -> Callable[..., None]:
    """Run a real procrastinate worker until its queues are empty.

    It uses procrastinate's own psycopg pool (like ``manage.py procrastinate worker``),
    not Django's connection, hence ``transactional_db``: jobs must be committed to be seen.
    """

    def run(queues: Iterable[str] | None = None, periodic: bool = False, **options) -> None:
        """``periodic=False`` keeps the periodic deferrer quiet: tests tick on their own clock."""
        options.setdefault("listen_notify", False)
        registered = app.periodic_registry.periodic_tasks
        if not periodic:
            app.periodic_registry.periodic_tasks = {}
        try:
            with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
                worker_app.run_worker(
                    queues=list(queues) if queues is not None else None,
                    wait=False,
                    install_signal_handlers=False,
                    **options,
                )
        finally:
            app.periodic_registry.periodic_tasks = registered

    return run


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(
        username="owner", email="owner@example.com", password="pw-for-tests-only"
    )


@pytest.fixture
def tenant(user):
    from tenants.models import Tenant

    return Tenant.create(user, "acme", "ops@acme.example")


@pytest.fixture
def other_tenant(user):
    from tenants.models import Tenant

    return Tenant.create(user, "globex", "ops@globex.example")


# A test-only integration type: its task fails as often as asked, then succeeds.
from integrations.base.registry import IntegrationType, register  # noqa: E402
from integrations.base.tasks import RunContext, integration_task  # noqa: E402

PROBE_CALLS: list[dict] = []


@register
class Probe(IntegrationType):
    name = "probe"


@integration_task(Probe)
def flaky(run: RunContext, fail_first: int = 0) -> dict:
    PROBE_CALLS.append({"task_id": run.task_id, "attempt": run.attempt})
    if run.attempt <= fail_first:
        raise RuntimeError(f"probe failure on attempt {run.attempt}")
    return {"attempt": run.attempt}


@pytest.fixture
def probe_task(tenant):
    """Make Tasks of the probe integration: ``probe_task(cron, now=..., **options)``."""
    from integrations.models import Integration
    from scheduler.models import Task

    integration, _ = Integration.objects.get_or_create(name="probe", tenant=tenant)

    def make(cron: str = "* * * * *", now=None, tenant_=None, **options) -> Task:
        target = integration
        if tenant_ is not None:
            target, _ = Integration.objects.get_or_create(name="probe", tenant=tenant_)
        task = Task(integration=target, name="flaky", cron=cron, **options)
        # Identical Tasks are refused: alike ones a test asks for get a negative fail_first
        # each (never fails, as 0).
        copy = 0
        while task.kwargs == {} or copy < 0:
            if task.identical() is None:
                break
            copy -= 1
            task.kwargs = {"fail_first": copy}
        task.full_clean()
        task.save(now=now)
        return task

    return make


@pytest.fixture
def test_database_url(transactional_db) -> str:
    """The URL of pytest-django's test database, for subprocesses (shell, workers)."""
    from django.db import connection

    s = connection.settings_dict
    return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
