"""A tenant's share of shared workers in admin: who may set ``weight`` and ``max_running``,
how bad values are refused, and the load (backlog, running jobs, oldest wait) shown per
tenant on the dashboard and the tenant page, scoped to the user's tenants, in a bounded
number of queries. Every request goes through Django's test client; jobs are real
procrastinate jobs on the tenants' queues."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django import app

from tenants.models import Membership, Tenant
from tenants.queues import queue_for
from tests.test_security_roles import change_url, page_form

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"


@pytest.fixture
def world(django_user_model):
    """acme: olivia (owner), adam (admin), vera (viewer); globex: bella (owner); root."""
    make = django_user_model.objects.create_user
    users = {
        name: make(name, f"{name}@example.com", None, is_staff=True)  # force_login only
        for name in ("olivia", "adam", "vera", "bella")
    }
    users["root"] = django_user_model.objects.create_superuser("root", "root@example.com", None)
    acme = Tenant.create(users["olivia"], "acme", "ops@acme.example", weight=4, max_running=2)
    Membership.objects.create(tenant=acme, user=users["adam"], role="admin")
    Membership.objects.create(tenant=acme, user=users["vera"], role="viewer")
    globex = Tenant.create(users["bella"], "globex", "ops@globex.example", weight=7)
    return {**users, "acme": acme, "globex": globex}


def share(tenant: Tenant) -> tuple[int, int | None]:
    tenant.refresh_from_db()
    return tenant.weight, tenant.max_running


def post_tenant_form(client, user, tenant: Tenant, **changes: str) -> tuple[int, str]:
    """Post the tenant page's own form, as rendered for ``user``, with ``changes`` applied
    (a field the page does not offer is added, as a forged request would)."""
    client.force_login(user)
    data = page_form(client, change_url(tenant))
    data.update(changes)
    response = client.post(change_url(tenant), data)
    return response.status_code, response.content.decode()


# Who may set the share.


@pytest.mark.parametrize("actor", ["olivia", "root"])
def test_owner_and_superuser_set_weight_and_limit(client, world, actor):
    acme = world["acme"]
    status, _ = post_tenant_form(client, world[actor], acme, weight="12", max_running="5")
    assert status == 302
    assert share(acme) == (12, 5)

    status, _ = post_tenant_form(client, world[actor], acme, max_running="")
    assert status == 302
    assert share(acme) == (12, None)  # empty: no limit


def test_admin_sees_the_share_but_a_forged_post_changes_nothing(client, world):
    acme = world["acme"]
    client.force_login(world["adam"])
    page = client.get(change_url(acme)).content.decode()
    assert 'name="weight"' not in page and 'name="max_running"' not in page

    status, _ = post_tenant_form(
        client, world["adam"], acme, weight="100", max_running="1000", email="new@acme.example"
    )
    assert status == 302
    acme.refresh_from_db()
    assert acme.email == "new@acme.example"  # a field admins may change went through
    assert share(acme) == (4, 2)


def test_viewer_cannot_change_the_share(client, world):
    acme = world["acme"]
    client.force_login(world["olivia"])
    data = page_form(client, change_url(acme))  # an owner's full form, replayed
    data.update(weight="100", max_running="")
    client.force_login(world["vera"])
    page = client.get(change_url(acme)).content.decode()
    assert 'name="weight"' not in page and 'name="max_running"' not in page
    assert client.post(change_url(acme), data).status_code == 403
    assert share(acme) == (4, 2)


def test_owner_of_another_tenant_cannot_change_the_share(client, world):
    client.force_login(world["bella"])
    response = client.post(change_url(world["acme"]), {"weight": "100", "max_running": ""})
    assert response.status_code in (302, 404)  # admin's "does not exist" answer
    assert share(world["acme"]) == (4, 2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("weight", "0", "Enter a weight from 1 to 100 (0 is too low)."),
        ("weight", "101", "Enter a weight from 1 to 100 (101 is too high)."),
        ("weight", "", "Enter a weight from 1 to 100 (1 is the usual share)."),
        ("weight", "1.5", "Enter a weight as a whole number from 1 to 100."),
        ("max_running", "0", "or leave it empty for no limit (0 is too low)."),
        ("max_running", "1001", "or leave it empty for no limit (1001 is too high)."),
        ("max_running", "-3", "or leave it empty for no limit (-3 is too low)."),
        ("max_running", "many", "or leave it empty for no limit."),
    ],
)
def test_out_of_range_values_are_refused_with_a_clear_message(client, world, field, value, message):
    acme = world["acme"]
    status, page = post_tenant_form(
        client, world["olivia"], acme, **{field: value, "email": "new@acme.example"}
    )
    assert status == 200 and message in page
    acme.refresh_from_db()
    assert share(acme) == (4, 2) and acme.email == "ops@acme.example"  # nothing half-saved


# The load shown per tenant.


class _LoadTable(HTMLParser):
    """The rows of ``table#tenant-load``: tenant id -> {cell class: text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, dict[str, str]] = {}
        self.found = False
        self._in_table = False
        self._row: dict[str, str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "tenant-load":
            self._in_table = self.found = True
        elif self._in_table and tag == "tr" and a.get("data-tenant"):
            self._row = self.rows.setdefault(int(a["data-tenant"]), {})
        elif self._row is not None and tag == "td":
            self._cell = a.get("class", "tenant")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self._row[self._cell] = self._row.get(self._cell, "") + data.strip()


def parse_load(response) -> dict[int, dict[str, str]]:
    assert response.status_code == 200
    table = _LoadTable()
    table.feed(response.content.decode())
    assert table.found, "no load table on the page"
    return table.rows


def load_table(client, user, url: str) -> dict[int, dict[str, str]]:
    client.force_login(user)
    return parse_load(client.get(url))


def defer(tenant: Tenant, scheduled_at: dt.datetime | None = None) -> int:
    """A real job on the tenant's queue, deferred through procrastinate."""
    task = app.configure_task("tests.add", queue=queue_for(tenant), schedule_at=scheduled_at)
    return task.defer(a=1, b=2)


def run_sql(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@pytest.fixture
def jobs(world) -> dict[str, list[int]]:
    """acme: 4 jobs, one running, one deferred 2 hours ago, one due only tomorrow.
    globex: 2 jobs, one finished. Marked by SQL, as a worker would."""
    now = timezone.now()
    acme = [defer(world["acme"]) for _ in range(3)]
    acme.append(defer(world["acme"], scheduled_at=now + dt.timedelta(days=1)))
    run_sql("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [acme[0]])
    run_sql(
        "UPDATE procrastinate_events SET at = %s WHERE job_id = %s AND type = 'deferred'",
        [now - dt.timedelta(hours=2), acme[1]],
    )
    globex = [defer(world["globex"]) for _ in range(2)]
    run_sql("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", [globex[0]])
    return {"acme": acme, "globex": globex}


ACME_LOAD = {"backlog": "3", "running": "1", "oldest-wait": "2 h 00 min", "weight": "4"}


def test_dashboard_shows_each_visible_tenants_load(client, world, jobs):
    acme, globex = world["acme"].pk, world["globex"].pk
    rows = load_table(client, world["root"], DASHBOARD)
    assert rows[acme] | ACME_LOAD == rows[acme] and rows[acme]["limit"] == "2"
    assert rows[globex]["backlog"] == "1" and rows[globex]["running"] == "0"
    assert rows[globex]["weight"] == "7" and rows[globex]["limit"] == "—"
    assert re.fullmatch(r"\d+ s", rows[globex]["oldest-wait"])  # deferred moments ago


@pytest.mark.parametrize("member", ["olivia", "adam", "vera"])
def test_members_of_one_tenant_never_see_anothers_load(client, world, jobs, member):
    for url in (DASHBOARD, change_url(world["acme"])):
        rows = load_table(client, world[member], url)
        assert set(rows) == {world["acme"].pk}, url
        assert rows[world["acme"].pk] | ACME_LOAD == rows[world["acme"].pk]
    assert client.get(change_url(world["globex"])).status_code in (302, 404)

    rows = load_table(client, world["bella"], DASHBOARD)
    assert set(rows) == {world["globex"].pk}
    assert rows[world["globex"].pk]["backlog"] == "1"


def test_tenant_page_shows_its_load_weight_and_limit(client, world, jobs):
    rows = load_table(client, world["bella"], change_url(world["globex"]))
    assert rows == {
        world["globex"].pk: {
            "tenant": "globex",
            "backlog": "1",
            "running": "0",
            "oldest-wait": rows[world["globex"].pk]["oldest-wait"],
            "weight": "7",
            "limit": "—",
        }
    }
    rows = load_table(client, world["vera"], change_url(world["acme"]))
    assert rows[world["acme"].pk]["limit"] == "2"


def test_an_idle_tenant_shows_zeros_and_no_wait(client, world):
    rows = load_table(client, world["olivia"], DASHBOARD)
    assert (
        rows[world["acme"].pk] | {"backlog": "0", "running": "0", "oldest-wait": "—"}
        == (rows[world["acme"].pk])
    )


def test_dashboard_queries_do_not_grow_with_tenants(
    client, world, django_user_model, django_assert_max_num_queries
):
    boss = django_user_model.objects.create_user("boss", "boss@example.com", None, is_staff=True)
    first = Tenant.create(boss, "tenant-0", "t0@example.com")
    defer(first)
    client.force_login(boss)
    client.get(DASHBOARD)  # warm caches (content types, session) outside the count
    with CaptureQueriesContext(connection) as one_tenant:
        assert client.get(DASHBOARD).status_code == 200

    tenants = [first] + [
        Tenant.create(boss, f"tenant-{i}", f"t{i}@example.com", weight=i % 100 + 1)
        for i in range(1, 50)
    ]
    for tenant in tenants:
        defer(tenant)
        defer(tenant)
    with django_assert_max_num_queries(len(one_tenant.captured_queries)):
        response = client.get(DASHBOARD)
    rows = parse_load(response)
    assert len(rows) == 50
    assert all(rows[t.pk]["backlog"] == ("3" if t == first else "2") for t in tenants)
