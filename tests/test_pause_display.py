"""A pause whose end has passed is over everywhere: in querysets, admin columns and filters."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from scheduler.models import Task
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks(probe_task):
    now = timezone.now()
    paused, expired, running = probe_task(), probe_task(), probe_task()
    paused.pause("open-ended")
    expired.pause("ended by itself", until=now + dt.timedelta(minutes=5))
    return {"paused": paused, "expired": expired, "running": running, "now": now}


def test_querysets_read_the_pause_end(tasks):
    later = tasks["now"] + dt.timedelta(minutes=10)  # the second pause has ended by then
    assert set(Task.objects.paused(later)) == {tasks["paused"]}
    assert set(Task.objects.not_paused(later)) == {tasks["expired"], tasks["running"]}
    assert set(Task.objects.paused(tasks["now"])) == {tasks["paused"], tasks["expired"]}


def test_admin_shows_an_expired_pause_as_over(tasks, admin_client, monkeypatch, tenant):
    later = tasks["now"] + dt.timedelta(minutes=10)
    monkeypatch.setattr(timezone, "now", lambda: later)
    tenant.pause("whole tenant", until=later - dt.timedelta(minutes=1), now=tasks["now"])

    page = admin_client.get("/admin/scheduler/task/?paused=yes")
    assert [t.pk for t in page.context["cl"].result_list] == [tasks["paused"].pk]
    page = admin_client.get("/admin/scheduler/task/?paused=no")
    shown = {t.pk for t in page.context["cl"].result_list}
    assert shown == {tasks["expired"].pk, tasks["running"].pk}
    cl = admin_client.get("/admin/scheduler/task/").context["cl"]
    column = {t.pk: cl.model_admin.paused_display(t) for t in cl.result_list}
    assert column == {
        tasks["paused"].pk: True,
        tasks["expired"].pk: False,
        tasks["running"].pk: False,
    }

    page = admin_client.get("/admin/tenants/tenant/")
    [row] = page.context["cl"].result_list
    assert row == tenant and page.context["cl"].model_admin.paused_display(row) is False
    assert not Tenant.objects.paused().exists()
