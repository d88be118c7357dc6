"""The admin's query surface under attack by a tenant's staff (tenant A), tenant B existing.

Each test performs the attack through Django's test client as a staff user with a
Membership (owner, admin or viewer of A), or as staff without any membership, and checks
it fails: secret columns cannot be filtered, searched or sorted on; filter choices come
from the user's tenants only; read-only users get no actions and actions forged anyway
change nothing; a user without a tenant sees no figure; junk parameters answer 400 (never
500) and another tenant's ids reveal nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.core.checks import Error
from django.db import connection
from django.test import RequestFactory
from django.urls import URLPattern
from procrastinate.contrib.django.models import ProcrastinateJob

from audit.models import AuditEntry
from integrations.models import Integration
from scheduler import admin_actions
from scheduler.models import SchedulerTick, Task, TaskRun, WorkerInfo
from scheduler.runs import run_now
from tenants import admin_actions as tenant_admin_actions
from tenants.admin_base import (
    SECRET_COLUMNS,
    AllowlistedQueryAdmin,
    TenantScopedAdmin,
    admin_query_reference,
    secret_in_path,
)
from tenants.models import Locker, Membership, Tenant

pytestmark = pytest.mark.django_db

#: Django's own admins: reachable only with Django permissions (superusers), not by tenant staff.
DJANGO_ADMINS = {"auth.User", "auth.Group"}


def set_job_status(job_id: int, status: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, job_id])


@pytest.fixture
def world(django_user_model):
    """Tenants A (Tokyo) and B (Lima) with integrations, tasks, runs, jobs, lockers, audit.

    B also has what A lacks: a ``probe`` integration, its task and job, and audit entries
    of an action and a model A has none of.
    """
    make = django_user_model.objects.create_user  # no password: tests log in with force_login
    users = {
        name: make(name, f"{name}@example.com", None, is_staff=True)
        for name in ("owner_a", "admin_a", "viewer_a", "owner_b", "nobody")
    }
    users["root"] = django_user_model.objects.create_superuser("root", "root@example.com", None)
    a = Tenant.create(users["owner_a"], "tenant-aaa", "ops@a.example", timezone="Asia/Tokyo")
    b = Tenant.create(users["owner_b"], "tenant-bbb", "ops@b.example", timezone="America/Lima")
    Membership.objects.create(tenant=a, user=users["admin_a"], role="admin")
    Membership.objects.create(tenant=a, user=users["viewer_a"], role="viewer")
    objects: dict = {}
    for tenant in (a, b):
        integration = Integration.objects.create(name="github", tenant=tenant, config={"org": "o"})
        task = integration.add_task("get_users", "*/5 * * * *", overlap="allow")
        jobs = {}
        for status in ("failed", "doing", "todo"):  # the last one stays todo
            run = run_now(task)
            set_job_status(run.job_id, status)
            jobs[status] = run.job_id
        objects[tenant.name] = {
            "tenant": tenant,
            "integration": integration,
            "task": task,
            "run": run,
            "jobs": jobs,
            "locker": Locker.add("github_token", f"ghp_secret_of_{tenant.name}", tenant.id),
        }
    probe = Integration.objects.create(name="probe", tenant=b)
    probe_task = probe.add_task("flaky", "0 * * * *")
    run_now(probe_task)
    AuditEntry.objects.create(
        tenant=b, action="job_abort", model="githubuser", object_id="1", object_repr="bbb-only"
    )
    return {**users, "a": a, "b": b, "A": objects["tenant-aaa"], "B": objects["tenant-bbb"]}


def login(client, user):
    client.force_login(user)
    return client


def changelist_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def our_admins() -> dict:
    return {
        model: model_admin
        for model, model_admin in admin.site._registry.items()
        if model._meta.label not in DJANGO_ADMINS
    }


# --- 1. secret columns are never filtered, searched or sorted on ---------------------------


def test_viewer_cannot_recover_a_locker_ciphertext_by_counting(client, world):
    """The attack: compare result counts of ``value__gte=<prefix>`` to read the ciphertext."""
    a, locker = world["a"], world["A"]["locker"]
    login(client, world["viewer_a"])
    base = f"/admin/tenants/locker/?tenant__id__exact={a.id}&key=github_token"
    assert client.get(f"/admin/tenants/locker/?tenant__id__exact={a.id}").status_code == 200
    answers = set()
    for probe in ("", locker.value[:1], locker.value[:6], "~"):
        response = client.get(base + "&" + urlencode({"value__gte": probe}))
        assert response.status_code == 400, probe
        assert b"This list cannot be filtered by 'key'" in response.content
        answers.add(response.content)
        alone = client.get("/admin/tenants/locker/", {"value__gte": probe})
        assert alone.status_code == 400, probe
        assert b"cannot be filtered by 'value__gte'" in alone.content  # says what and how
        assert b"tenant__id__exact" in alone.content
        assert locker.value[:6].encode() not in alone.content
        answers.add(alone.content)
    assert len(answers) == 2  # every probe answers the same: nothing to compare


#: Traversals from each admin's model to a secret column, as an attacker would try them.
SECRET_TRAVERSALS = [
    (Locker, "value__startswith"),
    (Locker, "value__regex"),
    (Locker, "value"),
    (Tenant, "lockers__value__gte"),
    (Tenant, "owner__password__startswith"),
    (Tenant, "memberships__user__password__startswith"),
    (Integration, "tenant__lockers__value__gte"),
    (Task, "tenant__lockers__value"),
    (Task, "integration__tenant__lockers__value__startswith"),
    (TaskRun, "task__tenant__lockers__value"),
    (TaskRun, "tenant__owner__password__regex"),
    (AuditEntry, "user__password__startswith"),
    (AuditEntry, "tenant__lockers__value__in"),
]


def test_traversals_to_secrets_answer_400(client, world):
    for user in ("admin_a", "root"):  # Locker values are write-only for superusers too
        login(client, world[user])
        for model, lookup in SECRET_TRAVERSALS:
            response = client.get(changelist_url(model), {lookup: "gAAAA"})
            assert response.status_code == 400, (user, model, lookup)
            assert secret_in_path(model, lookup) is not None, lookup


LOOKUP_SUFFIXES = ("", "__gte", "__startswith", "__regex", "__in", "__isnull")


def test_fuzz_every_field_and_lookup_on_every_changelist(client, world):
    """Anything outside an admin's declared parameters answers 400; nothing answers 500."""
    assert set(our_admins()) and all(
        isinstance(model_admin, AllowlistedQueryAdmin) for model_admin in our_admins().values()
    ), "every Metronome admin must derive from AllowlistedQueryAdmin"
    accepted = refused = 0
    for model, model_admin in our_admins().items():
        user = world["root" if model is SchedulerTick else "viewer_a"]
        login(client, user)
        url = changelist_url(model)
        allowed = model_admin.changelist_query_params()
        for field in model._meta.get_fields():
            for suffix in LOOKUP_SUFFIXES:
                key = field.name + suffix
                response = client.get(url, {key: "1"})
                if key in allowed:
                    assert response.status_code in (200, 400), (url, key)
                    accepted += 1
                else:
                    assert response.status_code == 400, (url, key)
                    refused += 1
        for key in ("pk", "id__gt", "unknown", "tenant__name", "args__task_id", "_changelist"):
            assert client.get(url, {key: "1"}).status_code == 400, (url, key)
    assert accepted and refused > accepted


JUNK_VALUES = [
    "abc",
    "-1",
    "0",
    "99999999999999999999999999",
    "1\x00",
    "x" * 5000,
    "\uff11\uff12",  # full-width digits
    "' OR 1=1 --",
    "9999",
]


def test_fuzz_junk_values_for_every_accepted_parameter(client, world):
    """Declared parameters with junk values: 200 or 400 with a message, never 500."""
    junk = ["abc", "-1", "99999999999999999999999999", "1\x00"]
    for model, model_admin in our_admins().items():
        login(client, world["root" if model is SchedulerTick else "admin_a"])
        url = changelist_url(model)
        for key in sorted(model_admin.changelist_query_params()):
            for value in junk:
                response = client.get(url, {key: value})
                assert response.status_code in (200, 400), (url, key, value)
                if response.status_code == 400:
                    assert response.content.strip(), (url, key, value)
            both = client.get(url + f"?{key}=1&{key}=2")
            assert both.status_code in (200, 400), (url, key)
        if model_admin.date_hierarchy:
            dh = model_admin.date_hierarchy
            for query in (f"{dh}__year=9999&{dh}__month=12&{dh}__day=31", f"{dh}__year=0"):
                assert client.get(f"{url}?{query}").status_code in (200, 400), query


@pytest.mark.parametrize(
    "query",
    [
        "/admin/scheduler/task/?last_status=zzz",
        "/admin/scheduler/task/?paused=maybe",
        "/admin/audit/auditentry/?action=zzz",
        "/admin/scheduler/task/?integration__name=gitlab-of-someone-else",
    ],
)
def test_a_value_a_filter_does_not_offer_answers_400(client, world, query):
    login(client, world["admin_a"])
    response = client.get(query)
    assert response.status_code == 400
    assert "is not a choice of the filter" in response.content.decode()


def test_search_fields_never_reach_a_secret():
    for model, model_admin in our_admins().items():
        for name in model_admin.search_fields:
            assert secret_in_path(model, name.lstrip("^=@")) is None, (model, name)
    assert secret_in_path(Locker, "value") == "tenants.Locker.value"
    assert secret_in_path(Task, "tenant__owner__password") == "auth.User.password"
    assert "value" not in " ".join(admin_query_reference()["tenants.Locker"])


def test_the_documented_query_surface_is_the_real_one():
    """The table in admin_query_reference's docstring (the README's source) cannot go stale."""
    documented = {}
    text = re.sub(r"\n\s{8}(?=\S)", " ", admin_query_reference.__doc__)
    for label, params, search in re.findall(r"^\s*(\w+\.\w+): (.*?)\| search:(.*)$", text, re.M):
        documented[label] = (set(params.split()), search.split())
    assert set(documented) == set(admin_query_reference())
    for model, model_admin in our_admins().items():
        params, search = documented[model._meta.label]
        assert params == set(model_admin.filter_query_params()), model
        assert search == list(model_admin.search_fields), model


def test_search_with_a_nul_byte_answers_400_not_500(client, world):
    login(client, world["admin_a"])
    for model in (Task, TaskRun, Locker, Integration):
        response = client.get(changelist_url(model), {"q": "get\x00users"})
        assert response.status_code == 400, model
        assert b"contains a NUL byte; remove it." in response.content, response.content
    response = client.get(
        "/admin/autocomplete/",
        {
            "app_label": "scheduler",
            "model_name": "task",
            "field_name": "integration",
            "term": "\x00",
        },
    )
    assert response.status_code == 400


def test_ordering_only_by_sortable_columns(client, world):
    """``o`` takes indexes of sortable list_display columns; the masked value is not one."""
    login(client, world["viewer_a"])
    locker_admin = admin.site._registry[Locker]
    columns = list(locker_admin.get_list_display(None))
    masked = columns.index("masked_value")
    assert client.get("/admin/tenants/locker/", {"o": str(columns.index("key"))}).status_code == 200
    for bad in (str(masked), f"-{masked}", "99", "1.x", "value", "-0-1"):
        assert client.get("/admin/tenants/locker/", {"o": bad}).status_code == 400, bad


class LeakyLockerAdmin(TenantScopedAdmin):
    """What a careless change could write: a column sorted by the ciphertext."""

    list_display = ["key", "leak"]
    search_fields = ["key", "tenant__lockers__value"]
    list_filter = ["tenant__name", "value"]

    @admin.display(ordering="value")
    def leak(self, obj: Locker) -> str:
        return "…"


def test_a_declaration_touching_a_secret_is_refused_at_start_up_and_at_request(world):
    model_admin = LeakyLockerAdmin(Locker, admin.AdminSite(name="leaky"))
    errors = [e for e in model_admin.check() if e.id and e.id.startswith("metronome.")]
    text = " ".join(e.msg for e in errors)
    assert all(isinstance(e, Error) for e in errors)
    assert "'leak' sorts on a secret column" in text
    assert "search_fields 'tenant__lockers__value'" in text
    assert "list_filter parameter 'value'" in text
    assert "'tenant__name' (AllValuesFieldListFilter) lists choices from every tenant" in text
    request = RequestFactory().get("/", {"o": "2"})
    request.user = world["admin_a"]
    assert "leak" not in model_admin.get_sortable_by(request)
    response = model_admin.changelist_view(request)
    assert response.status_code == 400
    assert b"Cannot sort by '2'" in response.content


def test_the_project_declares_nothing_that_reaches_a_secret():
    errors = [
        e
        for model_admin in our_admins().values()
        for e in model_admin.check()
        if e.id and e.id.startswith("metronome.")
    ]
    assert errors == []
    assert {"tenants.locker", "auth.user"} <= set(SECRET_COLUMNS)


def test_to_field_cannot_reference_a_secret(client, world):
    login(client, world["admin_a"])
    assert client.get("/admin/tenants/locker/", {"_to_field": "value"}).status_code == 400
    assert client.get("/admin/tenants/tenant/", {"_to_field": "owner"}).status_code == 400
    assert client.get("/admin/tenants/tenant/", {"_to_field": "id"}).status_code == 200


def test_every_filter_choice_link_works(client, world):
    """The allowlist is derived from the declarations: every link the filters draw is accepted."""
    login(client, world["root"])
    clicked = 0
    for model in our_admins():
        page = client.get(changelist_url(model)).content.decode()
        filters = page.split('id="changelist-filter"', 1)
        if len(filters) < 2:
            continue
        for href in set(re.findall(r'href="(\?[^"]*)"', filters[1].split("</nav>", 1)[0])):
            response = client.get(changelist_url(model) + unescape(href))
            assert response.status_code == 200, (model, href, response.content[:200])
            clicked += 1
    assert clicked > 20


# --- 2. filter choices come from the user's tenants only ----------------------------------


def test_filter_choices_list_only_the_users_tenants_values(client, world):
    login(client, world["viewer_a"])
    tasks = client.get("/admin/scheduler/task/").content.decode()
    assert "integration__name=github" in tasks
    assert "integration__name=probe" not in tasks
    integrations = client.get("/admin/integrations/integration/").content.decode()
    assert "name=github" in integrations and "name=probe" not in integrations
    audit = client.get("/admin/audit/auditentry/").content.decode()
    assert "model=task" in audit
    assert "model=githubuser" not in audit and "action=job_abort" not in audit
    assert "Job aborted" not in audit
    jobs = client.get("/admin/procrastinate/procrastinatejob/").content.decode()
    assert "task_name=github.get_users" in jobs and "probe" not in jobs
    assert "tenant-bbb" not in tasks + integrations + audit + jobs
    login(client, world["root"])
    assert "integration__name=probe" in client.get("/admin/scheduler/task/").content.decode()


# --- 3. read-only users see no actions, no save button, no "Change" wording ---------------


def read_only_pages(world) -> list[tuple[str, str]]:
    objs = world["A"]
    return [
        ("/admin/scheduler/task/", "task"),
        ("/admin/integrations/integration/", "integration"),
        ("/admin/tenants/locker/", "locker"),
        ("/admin/tenants/tenant/", "tenant"),
        ("/admin/scheduler/taskrun/", "task run"),
        ("/admin/procrastinate/procrastinatejob/", "procrastinate job"),
        (f"/admin/scheduler/task/{objs['task'].pk}/change/", "task"),
        (f"/admin/integrations/integration/{objs['integration'].pk}/change/", "integration"),
        (f"/admin/tenants/locker/{objs['locker'].pk}/change/", "locker"),
        (f"/admin/tenants/tenant/{world['a'].pk}/change/", "tenant"),
        (f"/admin/scheduler/taskrun/{objs['run'].pk}/change/", "task run"),
        (
            f"/admin/procrastinate/procrastinatejob/{objs['run'].job_id}/change/",
            "procrastinate job",
        ),
    ]


def test_a_viewer_sees_read_only_pages(client, world):
    request = RequestFactory().get("/")
    for user in ("viewer_a", "nobody"):
        request.user = world[user]
        for model, model_admin in our_admins().items():
            assert model_admin.get_actions(request) == {}, (user, model)
    login(client, world["viewer_a"])
    for url, name in read_only_pages(world):
        response = client.get(url)
        page = response.content.decode()
        assert response.status_code == 200, url
        assert 'name="action"' not in page, url
        assert 'name="_save"' not in page and 'name="_continue"' not in page, url
        assert f"Change {name}" not in page and "to change" not in page, url
        assert f"View {name}" in page or "to view" in page, url


def test_an_editor_gets_the_actions(client, world):
    """The control: the same pages offer actions and save buttons to an admin of A."""
    login(client, world["admin_a"])
    for url in ("/admin/scheduler/task/", "/admin/procrastinate/procrastinatejob/"):
        assert 'name="action"' in client.get(url).content.decode(), url
    task_page = client.get(f"/admin/scheduler/task/{world['A']['task'].pk}/change/")
    assert 'name="_save"' in task_page.content.decode()


def state_of(world) -> dict:
    """Everything an action may change, for both tenants."""
    return {
        "tasks": list(Task.objects.order_by("pk").values_list("pk", "enabled", "paused_at")),
        "tenants": list(Tenant.objects.order_by("pk").values_list("pk", "paused_at")),
        "runs": TaskRun.objects.count(),
        "jobs": list(
            ProcrastinateJob.objects.order_by("id").values_list("id", "status", "abort_requested")
        ),
        "audit": AuditEntry.objects.count(),
    }


def action_cases(objs) -> dict:
    """action name -> (changelist, id to select, prepare the object, did it change?)."""
    task, tenant, jobs = objs["task"], objs["tenant"], objs["jobs"]

    def task_is(**fields):
        return lambda: Task.objects.filter(pk=task.pk, **fields).exists()

    def tenant_is(**fields):
        return lambda: Tenant.objects.filter(pk=tenant.pk, **fields).exists()

    def job_is(job_id, **fields):
        return lambda: ProcrastinateJob.objects.filter(id=job_id, **fields).exists()

    tasks, tenants, job_list = (
        "/admin/scheduler/task/",
        "/admin/tenants/tenant/",
        "/admin/procrastinate/procrastinatejob/",
    )
    now = dt.datetime.now(dt.UTC)
    runs = TaskRun.objects.filter(task=task).count()
    return {
        "enable_tasks": (
            tasks,
            task.pk,
            lambda: Task.objects.filter(pk=task.pk).update(enabled=False),
            task_is(enabled=True),
        ),
        "disable_tasks": (tasks, task.pk, lambda: None, task_is(enabled=False)),
        "pause_tasks": (tasks, task.pk, lambda: None, task_is(paused_at__isnull=False)),
        "resume_tasks": (
            tasks,
            task.pk,
            lambda: Task.objects.filter(pk=task.pk).update(paused_at=now),
            task_is(paused_at__isnull=True),
        ),
        "run_tasks_now": (
            tasks,
            task.pk,
            lambda: None,
            lambda: TaskRun.objects.filter(task=task).count() > runs,
        ),
        "pause_tenants": (tenants, tenant.pk, lambda: None, tenant_is(paused_at__isnull=False)),
        "resume_tenants": (
            tenants,
            tenant.pk,
            lambda: Tenant.objects.filter(pk=tenant.pk).update(paused_at=now),
            tenant_is(paused_at__isnull=True),
        ),
        "retry_jobs": (
            job_list,
            jobs["failed"],
            lambda: None,
            job_is(jobs["failed"], status="todo"),
        ),
        "cancel_jobs": (
            job_list,
            jobs["todo"],
            lambda: None,
            job_is(jobs["todo"], status="cancelled"),
        ),
        "abort_jobs": (
            job_list,
            jobs["doing"],
            lambda: None,
            job_is(jobs["doing"], abort_requested=True),
        ),
    }


def post_action(client, url, action, selected):
    data = {"action": action, "_selected_action": [selected], "apply": "1", "note": "x"}
    return client.post(url, {**data, "until": ""})


def test_forged_actions_change_nothing(client, world):
    """A viewer forging every action on A's objects, and A's admin on B's, change nothing."""
    defined = {
        name
        for module in (admin_actions, tenant_admin_actions)
        for name, value in vars(module).items()
        if callable(value) and hasattr(value, "short_description")
    }
    cases_a, cases_b = action_cases(world["A"]), action_cases(world["B"])
    assert set(cases_a) == defined, "every admin action is attacked"
    for name in sorted(defined):
        url, a_id, prepare_a, changed_a = cases_a[name]
        _, b_id, prepare_b, changed_b = cases_b[name]
        prepare_a(), prepare_b()
        before = state_of(world)
        login(client, world["viewer_a"])
        assert post_action(client, url, name, a_id).status_code in (200, 302), name
        login(client, world["admin_a"])
        assert post_action(client, url, name, b_id).status_code in (200, 302), name
        login(client, world["owner_a"])
        post_action(client, url + f"?tenant__id__exact={world['b'].pk}", name, b_id)
        assert state_of(world) == before, name
        assert not changed_b(), name
        login(client, world["admin_a"])  # the control: the same request on A's object works
        post_action(client, url, name, a_id)
        assert changed_a(), name


# --- 4. staff without a membership see nothing --------------------------------------------


def test_staff_without_a_tenant_see_no_figure_on_the_dashboard(client, world):
    a, b = world["a"], world["b"]
    for tenant in (a, b):
        TaskRun.objects.filter(tenant=tenant).update(
            status="failed", error=f"boom-{tenant.name}", finished_at=dt.datetime.now(dt.UTC)
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now()) RETURNING id"
        )
        (worker_id,) = cursor.fetchone()
    WorkerInfo.objects.create(
        id=worker_id, name="worker-all", queues=None, hostname="host-x", pid=7
    )
    started = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    SchedulerTick.objects.create(
        tick_time=started, started_at=started, finished_at=started + dt.timedelta(seconds=2)
    )
    login(client, world["viewer_a"])  # the control: a member sees A's figures
    page = client.get("/admin/dashboard/").content.decode()
    assert "boom-tenant-aaa" in page and "worker-all" in page and "2030-05-06" in page
    assert "boom-tenant-bbb" not in page
    login(client, world["nobody"])
    response = client.get("/admin/dashboard/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "You belong to no tenant" in page and "superuser" in page
    for figure in (
        "tenant-aaa",
        "tenant-bbb",
        "boom-",
        "worker-all",
        "host-x",
        "2030-05-06",
        "Last tick",
        f"?queue={a.pk}",
        f"?queue={b.pk}",
        "Runs per hour",
        "runs-chart",
    ):
        assert figure not in page, figure
    index = client.get("/admin/").content.decode()
    assert "tenant-aaa" not in index and "Tasks" not in index


# --- 5. custom endpoints: junk answers 400 with a message, never 500 ----------------------

STANDARD_VIEWS = ("_changelist", "_add", "_history", "_delete", "_change")
#: Each custom admin URL (by name) and the parameters its view reads.
CUSTOM_ENDPOINT_PARAMS = {"scheduler_task_cron_preview": ("cron", "timezone", "integration")}

ENDPOINT_JUNK = [
    *JUNK_VALUES,
    "Mars/Olympus",
    "../../etc/passwd",
    "1e3",
    " 1",
    "1;DROP TABLE tenants_tenant",
    "9223372036854775808",
]


def custom_endpoints() -> dict[str, str]:
    found = {}
    for model, model_admin in admin.site._registry.items():
        for pattern in model_admin.get_urls():
            if (
                isinstance(pattern, URLPattern)
                and pattern.name
                and not pattern.name.endswith(STANDARD_VIEWS)
            ):
                found[pattern.name] = f"{changelist_url(model)}{pattern.pattern}"
    return found


def test_custom_admin_endpoints_answer_junk_with_400_never_500(client, world):
    endpoints = custom_endpoints()
    assert set(endpoints) == set(CUSTOM_ENDPOINT_PARAMS), "add the new endpoint's parameters"
    login(client, world["viewer_a"])
    for name, url in endpoints.items():
        for param in CUSTOM_ENDPOINT_PARAMS[name]:
            for value in ENDPOINT_JUNK:
                response = client.get(url, {"cron": "0 * * * *", param: value})
                assert response.status_code in (200, 400), (url, param, value)
                body = response.json()
                assert body["ok"] or body["error"], (url, param, value)
            repeated = client.get(url + f"?cron=0+*+*+*+*&{param}=1&{param}=2")
            assert repeated.status_code == 400 and "once" in repeated.json()["error"]
    for value in ENDPOINT_JUNK:
        assert client.get("/admin/dashboard/", {"queue": value, "x": value}).status_code == 200


def test_cron_preview_with_a_non_numeric_integration_answers_400(client, world):
    login(client, world["viewer_a"])
    response = client.get(
        "/admin/scheduler/task/cron-preview/", {"cron": "0 * * * *", "integration": "abc"}
    )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "'integration' must be an integration id, a whole number such as 12; got 'abc'.",
    }


def test_cron_preview_reveals_no_other_tenants_time_zone(client, world):
    login(client, world["admin_a"])

    def zone_for(integration_id) -> str:
        response = client.get(
            "/admin/scheduler/task/cron-preview/",
            {"cron": "0 * * * *", "integration": str(integration_id)},
        )
        assert response.status_code == 200
        return response.json()["zone"]

    assert zone_for(world["A"]["integration"].pk) == "Asia/Tokyo"
    missing = zone_for(10**15)
    assert zone_for(world["B"]["integration"].pk) == missing == "UTC"


def test_junk_object_ids_answer_404_never_500(client, world):
    login(client, world["admin_a"])
    for model in our_admins():
        for object_id in ("abc", "-1", "99999999999999999999999", "1%00", "%2e%2e"):
            for view in ("change", "history", "delete"):
                url = f"{changelist_url(model)}{object_id}/{view}/"
                assert client.get(url).status_code in (302, 400, 403, 404), url


def test_add_pages_answer_junk_initial_values_with_400(client, world):
    """``add/?integration=abc`` never reaches the related widget's query (a 500); B's ids
    show nothing."""
    login(client, world["admin_a"])
    b_ids = (str(world["B"]["integration"].pk), str(world["b"].pk))
    for url in (
        "/admin/scheduler/task/add/",
        "/admin/integrations/integration/add/",
        "/admin/tenants/locker/add/",
    ):
        for field in ("integration", "tenant", "name", "cron", "config", "value", "enabled"):
            for value in ("abc", "-1", "99999999999999999999999", "1\x00", *b_ids):
                response = client.get(url, {field: value})
                assert response.status_code in (200, 400), (url, field, value)
                assert "tenant-bbb" not in response.content.decode(), (url, field, value)
    response = client.get("/admin/scheduler/task/add/", {"integration": "abc"})
    assert response.status_code == 400
    assert b"'integration' takes the id of one of the integrations" in response.content
