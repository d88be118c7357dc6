"""Issue 6 fuzz: random crons, kwargs and zones never raise anything but ValidationError
and never leave an invalid Task saved — through add_task, the admin form and the tick."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import Integration
from scheduler.admin_forms import TaskForm
from scheduler.models import Task
from scheduler.tick import run_tick

pytestmark = pytest.mark.django_db

TOKENS = [
    "*",
    "*/5",
    "0",
    "59",
    "60",
    "1-5",
    "5-1",
    "1,2",
    "MON",
    "JAN",
    "L",
    "?",
    "#",
    "-1",
    "*/0",
    "31",
    "2",
    "x",
    "",
    "0-59/15",
    "7",
    "*/70",
]
cron_strings = st.one_of(
    st.lists(st.sampled_from(TOKENS), min_size=0, max_size=8).map(" ".join),
    st.text(max_size=30),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
zones = st.one_of(
    st.sampled_from(["", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"]),
    st.text(max_size=20),
)
NOW = dt.datetime(2026, 3, 8, 6, 59, tzinfo=dt.UTC)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_valid_if_saved(task: Task | None) -> None:
    for saved in Task.objects.all():
        saved.full_clean()
        assert saved.next_run_at is not None or not saved.enabled


@FUZZ
@given(cron=cron_strings, kwargs=json_values, zone=zones)
def test_add_task(tenant, cron, kwargs, zone):
    with transaction.atomic():
        integration = Integration(name="github", tenant_id=tenant.id)
        try:
            integration.add_task("get_users", cron, kwargs=kwargs, timezone=zone)
        except ValidationError:
            assert not Task.objects.exists()
        else:
            assert_valid_if_saved(None)
            run_tick(NOW + dt.timedelta(days=1))
        transaction.set_rollback(True)


@FUZZ
@given(cron=cron_strings, kwargs=st.text(max_size=20) | json_values.map(str), zone=zones)
def test_admin_form(tenant, cron, kwargs, zone):
    with transaction.atomic():
        integration = Integration.objects.create(name="github", tenant=tenant)
        form = TaskForm(
            data={
                "integration": integration.pk,
                "name": "get_users",
                "cron": cron,
                "timezone": zone,
                "kwargs": kwargs,
                "enabled": "on",
                "catchup": "latest",
                "catchup_window": "1 00:00:00",
                "catchup_max": "100",
                "overlap": "skip",
                "max_attempts": "1",
                "retry_backoff": "60",
            }
        )
        if form.is_valid():
            form.save()
            assert_valid_if_saved(None)
            run_tick(NOW + dt.timedelta(days=1))
        else:
            assert not Task.objects.exists()
        transaction.set_rollback(True)
