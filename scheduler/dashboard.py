"""The admin dashboard: queues, tenant load, a 24-hour chart of runs, failures, workers,
last tick.

Every figure is computed for the tenants the user may see; a fixed number of queries
whatever the number of tenants, runs or jobs. A staff user who belongs to no tenant sees
no figure at all (not even workers or the scheduler's last tick), only whom to ask.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.db.models import Case, Count, F, Func, Max, Min, TextField, Value, When
from django.db.models.functions import Coalesce, Left, Trim, TruncHour
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from scheduler import jobs
from scheduler.models import SchedulerTick, TaskRun, WorkerInfo
from tenants.access import AccessUser, scope, visible_queues, visible_tenant_ids
from tenants.queues import tenant_for

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "doing": "#1565c0",
    "todo": "#9e9e9e",
    "cancelled": "#ff8f00",
}
CHART_HOURS = 24
#: How far back "Recent failures" looks, and how many groups it shows at most.
FAILURE_WINDOW = dt.timedelta(days=7)
FAILURE_GROUPS = 10
#: The longest error summary shown (and grouped on).
SUMMARY_LENGTH = 200
TRACEBACK_HEAD = "Traceback (most recent call last)"


def dashboard_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    user = request.user
    if visible_tenant_ids(user) == []:
        context = {
            **admin.site.each_context(request),
            "title": "Dashboard",
            "no_tenant": True,
            "operators": operator_contacts(),
        }
        return TemplateResponse(request, "admin/scheduler/dashboard.html", context)
    loads = tenant_load_rows(visible_tenant_ids(user), now)
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "queues": queue_counts(user, {row.load.tenant_id: row.load.name for row in loads}),
        "tenant_loads": loads,
        "chart": runs_chart(runs_per_hour(user, now), now),
        "statuses": STATUS_COLOURS,
        "failures": failure_groups(user, now),
        "failure_days": FAILURE_WINDOW.days,
        "workers": workers(user),
        "tick": SchedulerTick.objects.order_by("-started_at").first(),
        "show_tick_figures": user.is_superuser,
    }
    return TemplateResponse(request, "admin/scheduler/dashboard.html", context)


def error_summary_sql() -> Func:
    """The summary of ``TaskRun.error``, computed by PostgreSQL: its first line, or, for a
    text that starts with a traceback, the traceback's last unindented line (the exception
    and its message), cut to :data:`SUMMARY_LENGTH` characters."""
    first_line = Func(F("error"), Value("\n"), Value(1), function="split_part")
    # In PostgreSQL's regular expressions, $ is the end of the text and . crosses newlines.
    last_line = Func(F("error"), Value(r"\n(\S[^\n]*)\s*$"), function="substring")
    summary = Case(
        When(error__startswith=TRACEBACK_HEAD, then=Coalesce(last_line, first_line)),
        default=first_line,
        output_field=TextField(),
    )
    return Left(Trim(summary), SUMMARY_LENGTH)


@dataclass(frozen=True)
class FailureGroup:
    """Failed runs of one task that failed the same way."""

    task_id: int
    task_name: str
    integration: str
    tenant_id: int
    tenant: str
    summary: str
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime

    @property
    def runs_url(self) -> str:
        """The TaskRun list, filtered to these runs (tenant, status, task name and error)."""
        words = self.task_name
        phrase = self.summary.split('"', 1)[0].strip()
        if phrase:
            words += f' "{phrase}"'
        query = urlencode(
            {"status__exact": "failed", "tenant__id__exact": self.tenant_id, "q": words}
        )
        return f"{reverse('admin:scheduler_taskrun_changelist')}?{query}"


def failure_groups(
    user: AccessUser, now: dt.datetime, limit: int = FAILURE_GROUPS
) -> list[FailureGroup]:
    """Failed runs of the user's tenants over :data:`FAILURE_WINDOW`, grouped by task and
    error summary, the latest failing first; one query."""
    seen = Coalesce("finished_at", "enqueued_at")
    rows = (
        scope(TaskRun.objects.all(), user, "tenant")
        .annotate(seen=seen)
        .filter(status=TaskRun.Status.FAILED, seen__gte=now - FAILURE_WINDOW)
        .annotate(summary=error_summary_sql())
        .values(
            "task_id",
            "task__name",
            "task__integration__name",
            "tenant_id",
            "tenant__name",
            "summary",
        )
        .annotate(
            count=Count("id"),
            first_seen=Min("seen"),
            last_seen=Max("seen"),
        )
        .order_by("-last_seen", "task_id")[:limit]
    )
    return [
        FailureGroup(
            task_id=row["task_id"],
            task_name=row["task__name"],
            integration=row["task__integration__name"],
            tenant_id=row["tenant_id"],
            tenant=row["tenant__name"],
            summary=row["summary"] or "",
            count=row["count"],
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
        )
        for row in rows
    ]


def operator_contacts() -> list[str]:
    """Whom a user without a tenant asks: the site's ``ADMINS``, if the operator set any."""
    contacts = []
    for entry in settings.ADMINS:
        if isinstance(entry, str):  # an address alone, the form Django 6 takes
            contacts.append(entry)
        else:
            name, email = entry
            contacts.append(f"{name} <{email}>" if name else email)
    return contacts


@dataclass
class QueueRow:
    queue: str
    tenant: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def queue_counts(user: AccessUser, names: dict[int, str]) -> list[QueueRow]:
    """Jobs per queue and status; ``names`` maps the visible tenants' ids to their names."""
    rows = jobs.job_counts(visible_queues(user))
    by_queue: dict[str, QueueRow] = {}
    for queue, status, count in rows:
        tenant_id = tenant_for(queue)
        tenant = names.get(tenant_id, "") if tenant_id is not None else ""
        row = by_queue.setdefault(queue, QueueRow(queue, tenant, {}))
        row.counts[status] = count
    return sorted(by_queue.values(), key=lambda r: (not r.tenant, r.tenant, r.queue))


@dataclass(frozen=True)
class TenantLoadRow:
    """One tenant's line in the load table: its share settings, what waits, what runs."""

    load: jobs.TenantLoad
    oldest_wait: dt.timedelta | None

    @property
    def oldest_wait_display(self) -> str:
        return format_wait(self.oldest_wait)


def format_wait(wait: dt.timedelta | None) -> str:
    """A short, exact-enough duration (``45 s``, ``3 min 05 s``, ``2 h 07 min``, ``3 d 4 h``);
    ``—`` when nothing waits."""
    if wait is None:
        return "—"
    seconds = int(wait.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


def tenant_load_rows(tenant_ids: Iterable[int] | None, now: dt.datetime) -> list[TenantLoadRow]:
    """Load rows of these tenants (None: all), by name, in one query. The caller scopes the
    ids to what the user may see."""
    return [
        TenantLoadRow(load, load.oldest_wait(now))
        for load in jobs.tenant_load(tenant_ids, now).values()
    ]


def runs_per_hour(user: AccessUser, now: dt.datetime) -> dict[dt.datetime, dict[str, int]]:
    since = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=CHART_HOURS - 1)
    rows = (
        scope(TaskRun.objects.all(), user, "tenant")
        .filter(enqueued_at__gte=since)
        .annotate(hour=TruncHour("enqueued_at", tzinfo=dt.UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
    )
    hours: dict[dt.datetime, dict[str, int]] = {
        since + dt.timedelta(hours=i): {} for i in range(CHART_HOURS)
    }
    for row in rows:
        hours.setdefault(row["hour"], {})[row["status"]] = row["n"]
    return hours


def runs_chart(hours: dict[dt.datetime, dict[str, int]], now: dt.datetime) -> SafeString:
    """A stacked bar chart as inline SVG: renders offline, no JavaScript."""
    width, height, left, bottom = 720, 200, 36, 24
    plot_h = height - bottom - 8
    bar_w = (width - left) / max(1, len(hours))
    peak = max([sum(c.values()) for c in hours.values()] + [1])
    parts = []
    for i, (hour, counts) in enumerate(sorted(hours.items())):
        x = left + i * bar_w
        y: float = height - bottom
        for status, colour in STATUS_COLOURS.items():
            n = counts.get(status, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{} UTC: {} {}</title></rect>",
                    f"{x + 1:.1f}",
                    f"{y:.1f}",
                    f"{bar_w - 2:.1f}",
                    f"{h:.1f}",
                    colour,
                    hour.strftime("%H:00"),
                    n,
                    status,
                )
            )
        if i % 3 == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" fill="#666">{}</text>',
                    f"{x:.1f}",
                    height - 8,
                    hour.strftime("%H:00"),
                )
            )
    axis = format_html(
        '<text x="0" y="14" font-size="10" fill="#666">{}</text>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>',
        peak,
        left,
        height - bottom,
        width,
        height - bottom,
    )
    return format_html(
        '<svg class="runs-chart" role="img" aria-label="Runs per hour by status, last 24 hours" '
        'viewBox="0 0 {} {}" width="100%" height="{}">{}{}</svg>',
        width,
        height,
        height,
        axis,
        format_html_join("", "{}", ((p,) for p in parts)),
    )


def workers(user: AccessUser) -> list[dict[str, Any]]:
    """Live workers (procrastinate's heartbeat table) with the queues they serve.

    A tenant's staff sees the workers that serve its queues, including all-queue ones.
    """
    infos = {w.id: w for w in WorkerInfo.objects.all()}
    queues = visible_queues(user)
    result = []
    for worker_id, heartbeat in jobs.worker_heartbeats():
        info = infos.get(worker_id)
        served = info.queues if info else None
        if queues is not None and served is not None and not set(served) & set(queues):
            continue
        result.append(
            {
                "id": worker_id,
                "name": info.name if info else "",
                "queues": ", ".join(served) if served else "all queues",
                "host": f"{info.hostname}:{info.pid}" if info else "",
                "last_heartbeat": heartbeat,
            }
        )
    return result
