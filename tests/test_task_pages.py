"""Task list, task page and TaskRun page: what an operator reads at a glance.

Durations read as ``67 ms`` / ``1.2 s``; a retried run shows each attempt (when, outcome,
error, retry time) on the task page and its own page, with runs made by a real worker;
the task list shows only what is unusual; the cron preview has one column for UTC; every
page runs a bounded number of queries.
"""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob

from scheduler.display import ago, attempts_of, format_duration
from scheduler.models import TaskRun
from scheduler.preview import cron_preview
from scheduler.runs import run_now
from tenants.models import Membership

ms = dt.timedelta(milliseconds=1)
s = dt.timedelta(seconds=1)


# --- format_duration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (dt.timedelta(microseconds=67_370), "67 ms"),
        (dt.timedelta(0), "0 ms"),
        (dt.timedelta(microseconds=400), "<1 ms"),
        (1.2 * s, "1.2 s"),
        (12 * s, "12 s"),
        (185 * s, "3 min 5 s"),
        (120 * s, "2 min"),
        (dt.timedelta(hours=2, minutes=4, seconds=10), "2 h 4 min"),
        (dt.timedelta(days=1, hours=3), "1 d 3 h"),
        (-1.5 * s, "-1.5 s"),
    ],
)
def test_format_duration_reads_at_a_glance(span, text):
    assert format_duration(span) == text


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (999.6 * ms, "1 s"),  # not "1000 ms"
        (59.96 * s, "1 min"),  # not "60.0 s"
        (dt.timedelta(minutes=59, seconds=59.6), "1 h"),  # not "59 min 60 s"
    ],
)
def test_format_duration_rounds_into_the_next_unit(span, text):
    assert format_duration(span) == text


def test_format_duration_of_an_unfinished_run_is_a_dash():
    assert format_duration(None) == "—"


def test_format_duration_never_shrinks_as_the_span_grows():
    """Across every unit boundary, a longer span never reads as a shorter one."""

    def value(text: str) -> float:
        units = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400}
        parts = re.findall(r"([\d.]+) (ms|s|min|h|d)", text)
        return sum(float(n) * units[u] for n, u in parts)

    spans = [dt.timedelta(milliseconds=x) for x in range(0, 200_000, 37)]
    spans += [dt.timedelta(seconds=x) for x in range(200, 200_000, 61)]
    values = [value(format_duration(span)) for span in spans]
    assert values == sorted(values)


def test_ago_reads_back_from_an_injected_now():
    now = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    assert ago(now - 185 * s, now) == "3 min 5 s ago"
    assert ago(now + 2 * s, now) == "just now"  # a clock a little ahead
    assert ago(None, now) == "—"


# --- attempts read from the log -----------------------------------------------------------


def test_attempts_survive_a_malformed_log():
    """A log written by hand or by an older version never breaks the page."""
    run = TaskRun(
        status="failed",
        attempt_log=[
            "not an object",
            {"attempt": 7, "started_at": "garbage", "outcome": "retry", "error": 42},
            {"started_at": "2026-05-03 12:00:01.5+00", "finished_at": "2026-05-03 12:00:03+00"},
        ],
    )
    first, second = attempts_of(run)
    assert (first.number, first.started_at, first.error) == (1, None, "42")
    assert first.next_at == dt.datetime(2026, 5, 3, 12, 0, 1, 500_000, tzinfo=dt.UTC)
    assert second.number == 2 and second.duration_text == "1.5 s"


# --- pages, with runs made by a real worker ---------------------------------------------


@pytest.fixture
def viewer(tenant, django_user_model):
    """A staff member of the tenant with the viewer role (not a superuser)."""
    user = django_user_model.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    Membership.objects.create(tenant=tenant, user=user, role="viewer")
    return user


def task_page(client, task) -> str:
    response = client.get(f"/admin/scheduler/task/{task.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def history_of(page: str) -> str:
    """The run history's HTML (the cron preview follows it)."""
    return page[page.index('id="run-history"') : page.index('id="cron-preview"')]


def test_a_retried_run_shows_each_attempt_and_why(run_worker, probe_task, tenant, viewer, client):
    task = probe_task(kwargs={"fail_first": 1}, max_attempts=2, retry_backoff=dt.timedelta(0))
    run_now(task)
    run_worker(queues=[tenant.queue_name])
    run = TaskRun.objects.get(task=task)
    assert run.status == "succeeded" and run.error == ""  # success clears the run's error
    started = [timezone.localtime(a.started_at) for a in attempts_of(run)]

    client.force_login(viewer)
    page = task_page(client, task)
    assert page.index('id="run-history"') < page.index("field-cron")  # before the fields
    history = history_of(page)
    attempts = re.findall(r'<tr class="mt-attempt mt-attempt--(\w+)">(.*?)</tr>', history, re.S)
    assert [outcome for outcome, _ in attempts] == ["retry", "succeeded"]
    first, second = (row for _, row in attempts)
    assert "RuntimeError: probe failure on attempt 1" in first
    assert f'retried <span title="{started[1]:%Y-%m-%d %H:%M:%S}' in first.replace("\n", "")
    assert "mt-badge--succeeded" in second and "probe failure" not in second
    # The history's Error column keeps why the run was retried, though it succeeded.
    run_row = re.search(r'<tr class="mt-run run-succeeded">(.*?)</tr>', history, re.S).group(1)
    assert "attempt 1: RuntimeError: probe failure on attempt 1" in run_row
    assert f">{format_duration(run.duration)}<" in run_row

    page = client.get(f"/admin/scheduler/taskrun/{run.pk}/change/").content.decode()
    assert page.count('<tr class="mt-attempt ') == 2
    assert "RuntimeError: probe failure on attempt 1" in page
    assert '"outcome": "retry"' not in page  # no raw JSON of the log


def test_a_run_waiting_for_its_retry_says_when_it_is_due(
    run_worker, probe_task, tenant, viewer, client
):
    task = probe_task(
        "0 * * * *", kwargs={"fail_first": 1}, max_attempts=2, retry_backoff=dt.timedelta(hours=1)
    )
    run_now(task)
    run_worker(queues=[tenant.queue_name])  # runs attempt 1; the retry is an hour away
    run = TaskRun.objects.get(task=task)
    due = timezone.localtime(ProcrastinateJob.objects.get(id=run.job_id).scheduled_at)
    assert run.status == "todo" and due > timezone.now() + dt.timedelta(minutes=50)

    client.force_login(viewer)
    history = history_of(task_page(client, task))
    [row] = re.findall(r'<tr class="mt-attempt mt-attempt--retry">(.*?)</tr>', history, re.S)
    assert f'due <span title="{due:%Y-%m-%d %H:%M:%S}' in row
    assert "RuntimeError: probe failure on attempt 1" in row


def test_hostile_error_text_is_shown_escaped(run_worker, probe_task, tenant, viewer, client):
    """An attempt's error may quote a remote server: the pages show it as text, not markup."""
    hostile = "<img src=x onerror=alert(document.cookie)>"
    task = probe_task(kwargs={"fail_first": 1}, max_attempts=2, retry_backoff=dt.timedelta(0))
    run_now(task)
    run_worker(queues=[tenant.queue_name])
    run = TaskRun.objects.get(task=task)
    log = run.attempt_log
    log[0]["error"] = f"RuntimeError: {hostile}"  # as a remote server's answer would read
    TaskRun.objects.filter(pk=run.pk).update(attempt_log=log)

    client.force_login(viewer)
    for url in (
        f"/admin/scheduler/task/{task.pk}/change/",
        f"/admin/scheduler/taskrun/{run.pk}/change/",
    ):
        page = client.get(url).content.decode()
        assert hostile not in page, url
        assert html.escape(hostile) in page, url  # shown, as text


def test_run_history_queries_do_not_grow_with_retried_runs(
    run_worker, probe_task, tenant, viewer, client
):
    """Each run's attempts and retry time are read with the page, not one query per run."""
    retry = {"kwargs": {"fail_first": 1}, "max_attempts": 2, "overlap": "allow"}
    one = probe_task("0 * * * *", retry_backoff=dt.timedelta(hours=1), **retry)
    many = probe_task("30 * * * *", retry_backoff=dt.timedelta(hours=1), **retry)
    run_now(one)
    for minute in range(10):
        run_now(many, now=timezone.now() + minute * dt.timedelta(minutes=1))
    run_worker(queues=[tenant.queue_name])  # every first attempt fails; retries wait
    assert TaskRun.objects.filter(status="todo", attempts=1).count() == 11

    client.force_login(viewer)
    task_page(client, one)  # warms the caches a first request fills (content types)
    counts = []
    for task in (one, many):
        with CaptureQueriesContext(connection) as queries:
            history = history_of(task_page(client, task))
        counts.append(len(queries.captured_queries))
        assert history.count("due <span") == (1 if task == one else 10)
    assert counts[0] == counts[1], counts


# --- the task list and the run list ---------------------------------------------------


def row_of(page: str, url: str) -> str:
    """The changelist row linking to ``url``."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S)
    [row] = [r for r in rows if f'href="{url}"' in r]
    return row


def test_task_list_shows_only_what_is_unusual(run_worker, probe_task, tenant, viewer, client):
    healthy = probe_task("0 * * * *")
    failing = probe_task("5 * * * *", kwargs={"fail_first": 1})
    paused = probe_task("10 * * * *")
    disabled = probe_task("15 * * * *", enabled=False)
    for task in (healthy, failing, paused):
        run_now(task)
    run_worker(queues=[tenant.queue_name])
    paused.pause("vendor maintenance")

    client.force_login(viewer)
    page = client.get("/admin/scheduler/task/").content.decode()
    assert "icon-no" not in page and "icon-yes" not in page  # no ✗ or ✓ on any row
    rows = {
        name: row_of(page, f"/admin/scheduler/task/{task.pk}/change/")
        for name, task in [
            ("healthy", healthy),
            ("failing", failing),
            ("paused", paused),
            ("disabled", disabled),
        ]
    }
    assert "mt-badge--succeeded" in rows["healthy"]
    assert "Paused" not in rows["healthy"] and "Disabled" not in rows["healthy"]
    assert "mt-badge--failed" in rows["failing"] and "Paused" not in rows["failing"]
    assert ">Paused<" in rows["paused"] and "vendor maintenance" in rows["paused"]
    assert ">Disabled<" in rows["disabled"] and ">Paused<" not in rows["disabled"]


def test_run_list_marks_manual_runs_only_and_reads_durations(
    run_worker, probe_task, tenant, viewer, client
):
    from scheduler.tick import run_tick

    start = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    scheduled = probe_task("0 * * * *", now=start - dt.timedelta(minutes=1))
    run_tick(start)
    manual = run_now(probe_task("30 * * * *"))
    run_worker(queues=[tenant.queue_name])

    client.force_login(viewer)
    page = client.get("/admin/scheduler/taskrun/").content.decode()
    assert "icon-no" not in page and "icon-yes" not in page
    manual_row = row_of(page, f"/admin/scheduler/taskrun/{manual.pk}/change/")
    assert ">Manual<" in manual_row
    [tick_run] = TaskRun.objects.filter(task=scheduled)
    tick_row = row_of(page, f"/admin/scheduler/taskrun/{tick_run.pk}/change/")
    assert ">Manual<" not in tick_row
    for run, row in ((manual, manual_row), (tick_run, tick_row)):
        run.refresh_from_db()
        assert run.status == "succeeded"
        cell = re.search(r'class="field-duration_display">(.*?)</td>', row).group(1)
        assert cell == format_duration(run.duration)  # not 0:00:00.067370


@pytest.mark.parametrize("url", ["/admin/scheduler/task/", "/admin/scheduler/taskrun/"])
def test_list_queries_do_not_grow_with_rows(probe_task, tenant, viewer, client, url):
    """Badges, states and times of every row come with the page's own queries."""
    client.force_login(viewer)
    counts = []
    for total in (1, 30):
        while TaskRun.objects.count() < total:
            n = TaskRun.objects.count()
            task = probe_task(f"{n} 0 * * *", enabled=n % 3 != 1)
            if n % 3 == 2:
                task.pause("maintenance")
            run_now(task)
        client.get(url)  # warms the caches a first request fills (content types)
        with CaptureQueriesContext(connection) as queries:
            page = client.get(url).content.decode()
        assert page.count("mt-badge--todo") == total
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1], counts


# --- the cron preview ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "one_column"),
    [("UTC", True), ("Etc/UTC", True), ("Europe/Paris", False), ("Africa/Abidjan", False)],
)
def test_preview_has_one_column_when_the_zone_reads_as_utc(zone, one_column):
    preview = cron_preview("0 3 * * *", zone)
    assert preview["same_as_utc"] is one_column
    locals_, utcs = [r["local"] for r in preview["next"]], [r["utc"] for r in preview["next"]]
    assert (locals_ == utcs) is one_column


@pytest.mark.parametrize(("zone", "cells"), [("UTC", 5), ("America/New_York", 10)])
def test_task_page_preview_columns(probe_task, viewer, client, zone, cells):
    task = probe_task("0 3 * * *", timezone=zone)
    client.force_login(viewer)
    page = task_page(client, task)
    start = page.index('id="cron-next-runs"')
    table = page[start : page.index("</table>", start)]
    assert table.count("<td>") == cells


def test_invalid_preview_is_an_error_without_a_table(viewer, client, tenant):
    client.force_login(viewer)
    data = client.get("/admin/scheduler/task/cron-preview/", {"cron": "61 * * * *"}).json()
    assert not data["ok"] and "minute" in data["error"] and "next" not in data
