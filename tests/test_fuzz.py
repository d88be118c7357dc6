"""Fuzz: random crons, kwargs and zones never raise anything but ValidationError and never
leave an invalid Task saved, through add_task and the admin form; what is saved, the tick runs."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import Integration
from scheduler.admin_forms import TaskForm
from scheduler.cron import prev_fire
from scheduler.models import Task, TaskRun
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
#: Tokens valid in every field: five or six of them make a cron that add_task accepts.
VALID_TOKENS = ["*", "*/5", "0", "1-5", "1,2", "7", "2"]
cron_strings = st.one_of(
    st.lists(st.sampled_from(TOKENS), min_size=0, max_size=8).map(" ".join),
    st.text(max_size=30),
    st.lists(st.sampled_from(VALID_TOKENS * 4 + TOKENS), min_size=5, max_size=6).map(" ".join),
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
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_saved_tasks_are_valid_and_run() -> None:
    """Every saved Task passes full_clean and is due at a real fire time of its cron; a
    tick at that time plans it without error: one run for that time, the next one later."""
    for saved in Task.objects.all():
        saved.full_clean()
        due = saved.next_run_at
        assert saved.enabled and due is not None
        assert prev_fire(saved.cron, due, saved.effective_timezone) == due
        run_tick(due)
        saved.refresh_from_db()
        assert saved.plan_error == ""
        assert list(TaskRun.objects.filter(task=saved).values_list("scheduled_for", flat=True)) == [
            due
        ]
        assert saved.next_run_at > due


@FUZZ
@given(cron=cron_strings, kwargs=st.just({}) | json_values, zone=zones)
def test_add_task(tenant, cron, kwargs, zone):
    with transaction.atomic():
        integration = Integration(name="github", tenant_id=tenant.id)
        try:
            integration.add_task("get_users", cron, kwargs=kwargs, timezone=zone)
        except ValidationError:
            assert not Task.objects.exists()
        else:
            assert_saved_tasks_are_valid_and_run()
        transaction.set_rollback(True)


@FUZZ
@given(
    cron=cron_strings,
    kwargs=st.just("{}")
    | st.text(max_size=20)
    | json_values.map(str)
    | json_values.map(json.dumps),
    zone=zones,
)
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
            assert_saved_tasks_are_valid_and_run()
        else:
            assert not Task.objects.exists()
        transaction.set_rollback(True)
