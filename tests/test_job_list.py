"""The job list, status badges, consecutive attempt numbers, dashboard failures, favicon.

Jobs run on real procrastinate workers; pages are read through Django's test client as a
superuser or as a tenant's staff member.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from scheduler.badges import STATUS_LABELS, status_badge
from scheduler.dashboard import FAILURE_WINDOW, failure_groups
from scheduler.display import format_duration
from scheduler.models import TaskRun
from scheduler.queues import SCHEDULER_QUEUE
from scheduler.runs import run_now
from tenants.models import Membership, Tenant
from tests.conftest import PROBE_CALLS

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = "/admin/procrastinate/procrastinatejob/"
DASHBOARD = "/admin/dashboard/"
NO_RETRY_WAIT = dt.timedelta(0)


@pytest.fixture(autouse=True)
def _no_jobs_of_other_tests(clean_jobs):
    """procrastinate's tables outlive a test: each test here starts from none."""


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", None)


@pytest.fixture
def staff_of(django_user_model):
    """``staff_of(tenant, role)``: a staff user (not superuser) with that role in the tenant."""

    def make(tenant: Tenant, role: str = "viewer"):
        user = django_user_model.objects.create_user(
            f"{role}-of-{tenant.pk}", f"{role}{tenant.pk}@example.com", None, is_staff=True
        )
        Membership.objects.create(tenant=tenant, user=user, role=role)
        return user

    return make


def job_rows(page: str) -> dict[int, str]:
    """Job id -> the HTML of its row in the changelist."""
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    found = {}
    for row in rows:
        match = re.search(r'<th class="field-id"><a href="[^"]*/(\d+)/change/', row)
        if match:
            found[int(match.group(1))] = row
    return found


def cell(row: str, column: str) -> str:
    """The text of one column of a row (tags removed, whitespace collapsed)."""
    match = re.search(rf'<td class="field-{column}[^"]*">(.*?)</td>', row, re.S)
    assert match, f"no column {column} in {row}"
    text = re.sub(r"<[^>]+>", " ", match.group(1).replace("<wbr>", ""))
    return " ".join(html.unescape(text).split())


def shown(value: dt.datetime) -> str:
    """A time as the list writes it, on two short lines: ``Nov 28`` and ``12:10:05``."""
    return f"{timezone.localtime(value):%b %d %H:%M:%S}"


def list_page(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(JOBS, params)
    assert response.status_code == 200, response.content[:300]
    return response.content.decode()


def defer_system_job() -> int:
    """A job on queue ``scheduler``, as procrastinate's periodic deferrer would make it."""
    return app.configure_task("metronome.maintenance", queue=SCHEDULER_QUEUE).defer(
        timestamp=int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp())
    )


# --- status badges ---------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(STATUS_LABELS))
def test_each_status_badge_names_its_status_in_words(status):
    badge = status_badge(status)
    match = re.fullmatch(
        r'<span class="mt-badge ([^"]+)" title="Status: ([^"]+)">([^<]+)</span>', badge
    )
    assert match, badge
    classes, title, label = match.groups()
    assert f"mt-badge--{status}" in classes.split()
    assert label == title == STATUS_LABELS[status]  # readable without its colour


def test_failed_badge_stands_out_from_the_others():
    """Failed has a colour class of its own; succeeded, running and waiting differ too."""
    kinds = {
        status: re.search(r"mt-badge--(\w+)[ \"]", status_badge(status)).group(1)
        for status in ("failed", "succeeded", "doing", "todo", "cancelled")
    }
    assert len(set(kinds.values())) == len(kinds)
    assert kinds["failed"] not in {k for s, k in kinds.items() if s != "failed"}


def test_a_hostile_status_is_shown_as_text_not_markup():
    hostile = '"><script>alert(1)</script>'
    badge = status_badge(hostile)
    assert "<script>" not in badge
    assert 'class="mt-badge mt-badge--unknown mt-badge--scriptalert1script"' in badge


def test_the_template_tag_renders_the_same_badge():
    from django.template import Context, Template

    rendered = Template("{% load metronome %}{% status_badge value %}").render(
        Context({"value": "failed"})
    )
    assert rendered == status_badge("failed")


# --- the job list ----------------------------------------------------------------------


def test_job_list_shows_tenant_badge_intended_time_attempt_times_and_duration(
    run_worker, probe_task, tenant, root, client
):
    task = probe_task(kwargs={"fail_first": 1})  # fails once, no retry: a final failure
    failed = run_now(task)
    run_worker(queues=[tenant.queue_name])
    task.kwargs = {"fail_first": 0}
    task.save()
    succeeded = run_now(task, now=timezone.now() + dt.timedelta(seconds=1))
    run_worker(queues=[tenant.queue_name])

    rows = job_rows(list_page(client, root))
    for run, status, label in ((failed, "failed", "Failed"), (succeeded, "succeeded", "Succeeded")):
        run.refresh_from_db()
        row = rows[run.job_id]
        assert f'class="mt-badge mt-badge--{status}"' in row
        assert cell(row, "status_display") == label
        assert cell(row, "tenant_queue") == f"{tenant.name} ({tenant.queue_name})"
        for column, value in (
            ("intended", run.scheduled_for),
            ("started", run.started_at),
            ("finished", run.finished_at),
        ):
            assert cell(row, column) == shown(value), column
            assert f'title="{timezone.localtime(value):%Y-%m-%d %H:%M:%S}' in row, column
        assert cell(row, "duration") == format_duration(run.finished_at - run.started_at)
        assert cell(row, "attempts_display") == "1"
        assert cell(row, "task_display") == "probe.flaky"
        assert f"/admin/scheduler/task/{task.pk}/change/" in row


def test_a_waiting_job_has_no_attempt_times_and_a_periodic_job_its_tick(
    probe_task, tenant, root, client
):
    run = run_now(probe_task())
    system_job = defer_system_job()
    rows = job_rows(list_page(client, root, system="show"))
    waiting = rows[run.job_id]
    assert cell(waiting, "status_display") == "To do"
    assert [cell(waiting, c) for c in ("started", "finished", "duration")] == ["—", "—", "—"]
    assert cell(waiting, "attempts_display") == "0"
    tick = timezone.localtime(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert cell(rows[system_job], "intended") == shown(tick)
    assert cell(rows[system_job], "tenant_queue") == SCHEDULER_QUEUE


def test_job_list_queries_do_not_grow_with_rows_or_tenants(
    probe_task, tenant, other_tenant, root, client, django_assert_max_num_queries
):
    run_now(probe_task())
    client.force_login(root)
    with CaptureQueriesContext(connection) as one_job:
        assert client.get(JOBS).status_code == 200
    for index in range(30):
        owner = tenant if index % 2 else other_tenant
        run_now(probe_task(f"{index} 1 * * *", tenant_=owner, overlap="allow"))
        defer_system_job()
    with django_assert_max_num_queries(len(one_job.captured_queries)):
        page = client.get(JOBS, {"system": "show"}).content.decode()
    assert len(job_rows(page)) == 31 + 30


def test_system_jobs_are_hidden_unless_asked_for(probe_task, tenant, root, client):
    run = run_now(probe_task())
    system_job = defer_system_job()
    assert set(job_rows(list_page(client, root))) == {run.job_id}
    assert set(job_rows(list_page(client, root, system="show"))) == {run.job_id, system_job}
    assert set(job_rows(list_page(client, root, system="only"))) == {system_job}
    assert set(job_rows(list_page(client, root, queue=SCHEDULER_QUEUE))) == {system_job}
    page = list_page(client, root)
    assert re.search(r"By\s+system jobs", page) and "?system=show" in page  # offered


def test_tenant_staff_cannot_list_system_jobs_with_the_filter(probe_task, tenant, staff_of, client):
    """The attack: a tenant's admin asks for ``system=show``/``only`` to see queue scheduler."""
    run = run_now(probe_task())
    system_job = defer_system_job()
    member = staff_of(tenant, "admin")
    for params in ({"system": "show"}, {"system": "only"}, {}):
        client.force_login(member)
        response = client.get(JOBS, params)
        assert response.status_code == 200
        assert set(job_rows(response.content.decode())) == {run.job_id}, params
    response = client.get(JOBS, {"queue": SCHEDULER_QUEUE})
    assert response.status_code == 400  # not a queue of theirs: refused, lists nothing
    assert client.get(f"{JOBS}{system_job}/change/").status_code == 404


def test_tenant_staff_see_only_their_tenants_name_and_jobs(
    probe_task, tenant, other_tenant, staff_of, client
):
    mine = run_now(probe_task())
    theirs = run_now(probe_task(tenant_=other_tenant))
    page = list_page(client, staff_of(tenant))
    assert set(job_rows(page)) == {mine.job_id}
    assert other_tenant.name not in page
    assert theirs.job_id not in job_rows(page)


def test_the_new_filter_value_is_checked(root, client):
    client.force_login(root)
    response = client.get(JOBS, {"system": "everything"})
    assert response.status_code == 400
    assert b"'everything' is not a choice of the filter 'system'" in response.content


def test_job_page_shows_the_same_details(run_worker, probe_task, tenant, root, client):
    run = run_now(probe_task())
    run_worker(queues=[tenant.queue_name])
    run.refresh_from_db()
    client.force_login(root)
    page = client.get(f"{JOBS}{run.job_id}/change/").content.decode()
    assert "mt-badge--succeeded" in page
    assert f"{tenant.name} <span" in page
    assert f"{timezone.localtime(run.started_at):%H:%M:%S}" in page
    assert format_duration(run.finished_at - run.started_at) in page


# --- consecutive attempt numbers -------------------------------------------------------


def retry_from_admin(client, user, job_id: int) -> None:
    client.force_login(user)
    response = client.post(
        JOBS, {"action": "retry_jobs", "_selected_action": [job_id]}, follow=True
    )
    assert "1 job(s) retried" in response.content.decode()


def test_a_failed_job_retried_from_admin_runs_as_attempt_two(
    run_worker, probe_task, tenant, root, client
):
    PROBE_CALLS.clear()
    task = probe_task(kwargs={"fail_first": 1})  # no automatic retry
    run = run_now(task)
    run_worker(queues=[tenant.queue_name])
    assert ProcrastinateJob.objects.get(id=run.job_id).status == "failed"

    retry_from_admin(client, root, run.job_id)
    run_worker(queues=[tenant.queue_name])

    job = ProcrastinateJob.objects.get(id=run.job_id)
    run.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2
    assert [call["attempt"] for call in PROBE_CALLS] == [1, 2]
    assert run.attempts == 2
    assert [entry["attempt"] for entry in run.attempt_log] == [1, 2]
    assert [entry["outcome"] for entry in run.attempt_log] == ["failed", "succeeded"]
    assert cell(job_rows(list_page(client, root))[run.job_id], "attempts_display") == "2"


def test_automatic_then_manual_retries_number_attempts_one_two_three(
    run_worker, probe_task, tenant, staff_of, client
):
    task = probe_task(kwargs={"fail_first": 2}, max_attempts=2, retry_backoff=NO_RETRY_WAIT)
    run = run_now(task)
    run_worker(queues=[tenant.queue_name])  # attempts 1 and 2 fail: the policy gives up
    assert ProcrastinateJob.objects.get(id=run.job_id).status == "failed"

    retry_from_admin(client, staff_of(tenant, "owner"), run.job_id)
    run_worker(queues=[tenant.queue_name])

    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 3
    assert [entry["attempt"] for entry in run.attempt_log] == [1, 2, 3]
    assert ProcrastinateJob.objects.get(id=run.job_id).attempts == 3


def test_retrying_a_job_that_never_ran_counts_no_attempt(probe_task, root, client):
    """A job marked failed before it ever ran (attempts 0) keeps 0 attempts once retried."""
    run = run_now(probe_task())
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [run.job_id]
        )
    retry_from_admin(client, root, run.job_id)
    job = ProcrastinateJob.objects.get(id=run.job_id)
    assert (job.status, job.attempts) == ("todo", 0)


# --- dashboard: recent failures, grouped -----------------------------------------------


def fail_runs(run_worker, task, count: int) -> list[TaskRun]:
    runs = []
    for index in range(count):
        runs.append(run_now(task, now=timezone.now() + dt.timedelta(seconds=index)))
        run_worker(queues=[task.tenant.queue_name])
    for run in runs:
        run.refresh_from_db()
        assert run.status == "failed"
    return runs


def failure_rows(page: str) -> list[str]:
    table = page[page.index('id="failures"') :]
    table = table[: table.index("</table>")]
    return re.findall(r'<tr class="failure-group">(.*?)</tr>', table, re.S)


def test_failures_are_grouped_by_task_and_error_with_counts_and_times(
    run_worker, probe_task, tenant, root, client
):
    task = probe_task(kwargs={"fail_first": 9}, overlap="allow")
    runs = fail_runs(run_worker, task, 3)
    other = probe_task("0 * * * *", kwargs={"fail_first": 9}, overlap="allow")
    [lone] = fail_runs(run_worker, other, 1)
    TaskRun.objects.filter(pk=lone.pk).update(
        error='Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
        "    raise ValueError('boom')\nValueError: boom\n"
    )

    client.force_login(root)
    rows = failure_rows(client.get(DASHBOARD).content.decode())
    assert len(rows) == 2
    latest, grouped = rows  # the latest failure first
    assert "ValueError: boom" in latest and "Traceback" not in latest
    assert "RuntimeError: probe failure on attempt 1" in grouped
    assert "Traceback" not in grouped
    assert re.search(r'class="failure-count">3<', grouped)
    first = min(r.finished_at for r in runs)
    last = max(r.finished_at for r in runs)
    assert f"{timezone.localtime(first):%Y-%m-%d %H:%M:%S}" in grouped
    assert f"{timezone.localtime(last):%Y-%m-%d %H:%M:%S}" in grouped

    # The group's link lists exactly its runs.
    url = html.unescape(re.search(r'class="failure-runs" href="([^"]+)"', grouped).group(1))
    listed = client.get(url)
    assert listed.status_code == 200, listed.content[:300]
    shown = {
        int(i)
        for i in re.findall(r"/admin/scheduler/taskrun/(\d+)/change/", listed.content.decode())
    }
    assert shown == {r.pk for r in runs}
    assert urlsplit(url).path == "/admin/scheduler/taskrun/"


def test_failures_older_than_the_window_are_left_out(run_worker, probe_task, root):
    task = probe_task(kwargs={"fail_first": 9})
    [run] = fail_runs(run_worker, task, 1)
    assert len(failure_groups(root, run.finished_at + FAILURE_WINDOW)) == 1
    assert failure_groups(root, run.finished_at + FAILURE_WINDOW + dt.timedelta(seconds=1)) == []


def test_a_tenant_user_sees_only_its_own_tenants_failures(
    run_worker, probe_task, tenant, other_tenant, staff_of, client
):
    """The attack: another tenant's member reads the dashboard for this tenant's errors."""
    mine = probe_task(kwargs={"fail_first": 9})
    fail_runs(run_worker, mine, 1)
    theirs = probe_task(tenant_=other_tenant, kwargs={"fail_first": 9})
    [secret_run] = fail_runs(run_worker, theirs, 1)
    TaskRun.objects.filter(pk=secret_run.pk).update(error="KeyError: globex-private-detail")

    client.force_login(staff_of(tenant))
    page = client.get(DASHBOARD).content.decode()
    rows = failure_rows(page)
    assert len(rows) == 1 and tenant.name in rows[0]
    assert "globex-private-detail" not in page
    assert f"/admin/scheduler/task/{theirs.pk}/change/" not in page


def test_dashboard_queries_do_not_grow_with_failure_groups(
    run_worker, probe_task, tenant, root, client, django_assert_max_num_queries
):
    fail_runs(run_worker, probe_task(kwargs={"fail_first": 9}), 1)
    client.force_login(root)
    with CaptureQueriesContext(connection) as one_group:
        client.get(DASHBOARD)
    for minute in range(4):
        task = probe_task(f"{minute} 2 * * *", kwargs={"fail_first": 9})
        fail_runs(run_worker, task, 1)
    with django_assert_max_num_queries(len(one_group.captured_queries)):
        page = client.get(DASHBOARD).content.decode()
    assert len(failure_rows(page)) == 5


# --- favicon ---------------------------------------------------------------------------


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert b"".join(response.streaming_content)[:4] == b"\x00\x00\x01\x00"  # an ICO file


def test_admin_pages_link_the_icon_and_the_badge_styles(root, client):
    client.force_login(root)
    for url in ("/admin/", JOBS, DASHBOARD):
        page = client.get(url).content.decode()
        assert re.search(r'<link rel="icon"[^>]*href="/static/scheduler/favicon\.svg"', page), url
        assert 'href="/static/scheduler/metronome.css"' in page, url
