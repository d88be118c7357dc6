"""Tenant-scoped admin (two tenants, three users), actions, audit, query bounds."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from procrastinate.contrib.django.models import ProcrastinateJob

from audit.models import AuditEntry
from integrations.models import Integration
from scheduler.models import Task, TaskRun
from scheduler.runs import run_now
from tenants.models import Locker, Membership, Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(clean_jobs, django_user_model):
    """acme (alice: owner, bob: viewer) and globex (carol: owner), plus a superuser."""
    make = django_user_model.objects.create_user
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    alice, bob, carol = (
        make(n, f"{n}@example.com", "pw", is_staff=True) for n in ("alice", "bob", "carol")
    )
    acme = Tenant.create(alice, "acme-corp", "ops@acme.example")
    Membership.objects.create(tenant=acme, user=bob, role="viewer")
    globex = Tenant.create(carol, "globex-inc", "ops@globex.example")
    objects = {}
    for tenant in (acme, globex):
        integration = Integration.objects.create(name="github", tenant=tenant, config={"org": "o"})
        task = integration.add_task("get_users", "*/5 * * * *")
        locker = Locker.add("github_token", f"secret-of-{tenant.name}", tenant.id)
        run = run_now(task)
        objects[tenant.name] = {
            "tenant": tenant,
            "integration": integration,
            "task": task,
            "locker": locker,
            "run": run,
        }
    return {"root": root, "alice": alice, "bob": bob, "carol": carol, **objects}


def login(client, user):
    client.force_login(user)
    return client


CHANGELISTS = [
    "/admin/tenants/tenant/",
    "/admin/integrations/integration/",
    "/admin/scheduler/task/",
    "/admin/scheduler/taskrun/",
    "/admin/tenants/locker/",
    "/admin/procrastinate/procrastinatejob/",
    "/admin/audit/auditentry/",
    "/admin/dashboard/",
]


@pytest.mark.parametrize("url", CHANGELISTS)
def test_lists_show_only_the_users_tenants(client, world, url):
    login(client, world["alice"])
    page = client.get(url).content.decode()
    assert "acme-corp" in page
    assert "globex-inc" not in page
    assert "secret-of-" not in page
    login(client, world["root"])  # the control: a superuser sees both tenants
    response = client.get(url)
    page = response.content.decode()
    assert response.status_code == 200
    assert "acme-corp" in page and "globex-inc" in page
    assert "secret-of-" not in page


def change_urls(objs):
    return [
        f"/admin/tenants/tenant/{objs['tenant'].pk}/change/",
        f"/admin/integrations/integration/{objs['integration'].pk}/change/",
        f"/admin/scheduler/task/{objs['task'].pk}/change/",
        f"/admin/scheduler/taskrun/{objs['run'].pk}/change/",
        f"/admin/tenants/locker/{objs['locker'].pk}/change/",
        f"/admin/procrastinate/procrastinatejob/{objs['run'].job_id}/change/",
    ]


def test_other_tenants_objects_answer_404(client, world):
    login(client, world["alice"])
    for url in change_urls(world["globex-inc"]):
        assert client.get(url).status_code == 404, url
    for url in change_urls(world["acme-corp"]):
        assert client.get(url).status_code == 200, url


def test_viewer_reads_but_cannot_change(client, world):
    login(client, world["bob"])
    task = world["acme-corp"]["task"]
    page = client.get(f"/admin/scheduler/task/{task.pk}/change/").content.decode()
    assert "acme-corp" in page and 'name="_save"' not in page
    response = client.post(f"/admin/scheduler/task/{task.pk}/change/", {"cron": "* * * * *"})
    assert response.status_code == 403
    assert client.get("/admin/scheduler/task/add/").status_code == 403


def test_autocomplete_and_filters_are_scoped(client, world):
    login(client, world["alice"])
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "scheduler", "model_name": "task", "field_name": "integration", "term": ""},
    )
    texts = [r["text"] for r in response.json()["results"]]
    assert texts and all("acme-corp" in t for t in texts)
    page = client.get("/admin/scheduler/task/add/").content.decode()
    assert "globex-inc" not in page  # tenant and integration choices
    for url in ("/admin/procrastinate/procrastinatejob/", "/admin/scheduler/task/"):
        assert "globex-inc" not in client.get(url).content.decode()


def test_actions_never_touch_another_tenants_objects(client, world):
    login(client, world["alice"])
    ids = [world["acme-corp"]["task"].pk, world["globex-inc"]["task"].pk]
    client.post("/admin/scheduler/task/", {"action": "disable_tasks", "_selected_action": ids})
    assert Task.objects.get(pk=ids[0]).enabled is False
    assert Task.objects.get(pk=ids[1]).enabled is True
    login(client, world["bob"])  # a viewer: no change at all
    client.post("/admin/scheduler/task/", {"action": "enable_tasks", "_selected_action": ids})
    assert Task.objects.get(pk=ids[0]).enabled is False


def test_pause_resume_and_run_now_actions(client, world):
    login(client, world["alice"])
    task = world["acme-corp"]["task"]
    form = client.post(
        "/admin/scheduler/task/", {"action": "pause_tasks", "_selected_action": [task.pk]}
    )
    assert "Pause" in form.content.decode() and "note" in form.content.decode()
    client.post(
        "/admin/scheduler/task/",
        {
            "action": "pause_tasks",
            "_selected_action": [task.pk],
            "apply": "1",
            "note": "vendor outage",
            "until": "",
        },
    )
    task.refresh_from_db()
    assert task.paused_at is not None and task.pause_note == "vendor outage"
    client.post("/admin/scheduler/task/", {"action": "resume_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.paused_at is None
    Task.objects.filter(pk=task.pk).update(overlap="allow")
    response = client.post(
        "/admin/scheduler/task/",
        {"action": "run_tasks_now", "_selected_action": [task.pk]},
        follow=True,
    )
    assert "1 run(s) started" in response.content.decode()
    assert TaskRun.objects.filter(task=task, manual=True).count() == 2
    tenant = world["acme-corp"]["tenant"]
    client.post(
        "/admin/tenants/tenant/",
        {
            "action": "pause_tenants",
            "_selected_action": [tenant.pk],
            "apply": "1",
            "note": "billing",
            "until": "",
        },
    )
    tenant.refresh_from_db()
    assert tenant.pause_note == "billing"


def test_job_actions_only_on_the_right_status_and_report_counts(client, world):
    login(client, world["alice"])
    acme_job = world["acme-corp"]["run"].job_id
    globex_job = world["globex-inc"]["run"].job_id
    response = client.post(
        "/admin/procrastinate/procrastinatejob/",
        {"action": "retry_jobs", "_selected_action": [acme_job]},
        follow=True,
    )
    assert "0 job(s) retried. 1 skipped" in response.content.decode()  # still todo
    response = client.post(
        "/admin/procrastinate/procrastinatejob/",
        {"action": "cancel_jobs", "_selected_action": [acme_job, globex_job]},
        follow=True,
    )
    assert "1 job(s) cancelled" in response.content.decode()
    assert ProcrastinateJob.objects.get(id=acme_job).status == "cancelled"
    assert ProcrastinateJob.objects.get(id=globex_job).status == "todo"
    assert TaskRun.objects.get(job_id=acme_job).status == "cancelled"
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [acme_job])
    client.post(
        "/admin/procrastinate/procrastinatejob/",
        {"action": "retry_jobs", "_selected_action": [acme_job]},
    )
    assert ProcrastinateJob.objects.get(id=acme_job).status == "todo"
    actions = set(
        AuditEntry.objects.filter(model="procrastinatejob").values_list("action", flat=True)
    )
    assert actions == {"job_cancel", "job_retry"}


def test_audit_records_who_what_and_masks_secrets(client, world):
    login(client, world["alice"])
    locker = world["acme-corp"]["locker"]
    client.post(
        f"/admin/tenants/locker/{locker.pk}/change/",
        {"tenant": locker.tenant_id, "key": "github_token", "value": "new-secret-value"},
    )
    entry = AuditEntry.objects.filter(model="locker", action="change").first()
    assert entry.username == "alice" and entry.tenant_id == locker.tenant_id
    assert "new-secret-value" not in str(entry.changes) and "value" in entry.changes
    page = client.get("/admin/audit/auditentry/").content.decode()
    assert "new-secret-value" not in page and "secret-of-" not in page
    assert not AuditEntry.objects.filter(tenant=world["globex-inc"]["tenant"], username="alice")
    task = world["acme-corp"]["task"]
    task.pause("x")
    assert AuditEntry.objects.filter(model="task", action="pause").exists()
    task.delete()
    assert AuditEntry.objects.filter(model="task", action="delete").exists()


def test_task_page_shows_preview_and_run_history(client, world):
    login(client, world["alice"])
    task = world["acme-corp"]["task"]
    page = client.get(f"/admin/scheduler/task/{task.pk}/change/").content.decode()
    assert "Every 5 minutes" in page
    assert page.count(" UTC</td></tr>") == 5  # the next five runs, UTC column
    assert "Run history" in page and f"job {world['acme-corp']['run'].job_id}" in page
    preview = client.get(
        "/admin/scheduler/task/cron-preview/",
        {"cron": "30 2 * * *", "timezone": "America/New_York"},
    ).json()
    assert preview["ok"] and preview["description"] == "At 02:30"
    assert len(preview["next"]) == 5 and preview["next"][0]["local"].endswith(("EST", "EDT"))
    bad = client.get("/admin/scheduler/task/cron-preview/", {"cron": "0 0 31 2 *"}).json()
    assert not bad["ok"] and "never fires" in bad["error"]


@pytest.mark.parametrize("url", CHANGELISTS)
def test_list_pages_run_a_bounded_number_of_queries(client, world, url):
    tenant = world["acme-corp"]["tenant"]
    integration = world["acme-corp"]["integration"]
    tasks = Task.objects.bulk_create(
        Task(
            integration=integration,
            tenant=tenant,
            name="get_users",
            cron=f"{i % 60} {i // 60} * * *",
            next_run_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        )
        for i in range(100)
    )
    TaskRun.objects.bulk_create(
        TaskRun(task=t, tenant=tenant, scheduled_for=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
        for t in tasks
    )
    Locker.objects.bulk_create(Locker(tenant=tenant, key=f"k{i}", value="x") for i in range(100))
    login(client, world["alice"])
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    assert len(queries.captured_queries) <= 12, [q["sql"][:120] for q in queries.captured_queries]


# ----------------------------------------------------------------------------- long run lists


def test_the_run_list_counts_up_to_a_cap_newest_first_and_offers_only_the_users_tenants(
    client, world, monkeypatch
):
    """Runs grow by millions a day: the list counts at most a capped number of them and
    says "more than" beyond it, shows the newest first, and its tenant filter offers the
    user's own tenants, not every tenant that has runs; another tenant's id is refused."""
    from scheduler.paging import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "cap", 2)
    acme, globex = world["acme-corp"], world["globex-inc"]
    Task.objects.filter(pk=acme["task"].pk).update(overlap="allow")
    acme["task"].refresh_from_db()
    later = [run_now(acme["task"], now=acme["run"].scheduled_for + dt.timedelta(minutes=i))
             for i in (1, 2)]  # fmt: skip
    login(client, world["alice"])

    page = client.get("/admin/scheduler/taskrun/").content.decode()

    assert "more than 2 task runs" in page
    newest, previous = (f"/admin/scheduler/taskrun/{run.pk}/change/" for run in reversed(later))
    assert page.index(newest) < page.index(previous)
    assert f"?tenant__id__exact={acme['tenant'].pk}" in page
    assert globex["tenant"].name not in page
    assert f"tenant__id__exact={globex['tenant'].pk}" not in page

    monkeypatch.setattr(CappedPaginator, "cap", 10)
    filtered = client.get(f"/admin/scheduler/taskrun/?tenant__id__exact={acme['tenant'].pk}")
    assert "3 task runs" in filtered.content.decode()
    refused = client.get(f"/admin/scheduler/taskrun/?tenant__id__exact={globex['tenant'].pk}")
    assert refused.status_code == 400
    assert f"/admin/scheduler/taskrun/{globex['run'].pk}/" not in refused.content.decode()
