"""Admin for Tasks, their runs, procrastinate's jobs and the scheduler's ticks."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.paginator import Paginator
from django.db.models import Field, Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, JsonResponse, QueryDict
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import mark_safe
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler import admin_actions as actions
from scheduler.admin_forms import TaskForm
from scheduler.badges import status_badge
from scheduler.display import ago, attempts_of, format_duration, history_rows
from scheduler.job_list import SystemJobsFilter, details_of, with_details
from scheduler.models import SCHEDULER_FIELDS, SchedulerTick, Task, TaskRun
from scheduler.paging import CappedPaginator
from scheduler.preview import cron_preview
from scheduler.queues import SCHEDULER_QUEUE
from tenants.access import scope, tenant_roles, visible_queues
from tenants.admin_base import (
    AllowlistedQueryAdmin,
    TenantFilter,
    TenantScopedAdmin,
    ValuesFilter,
    may_run_actions,
)
from tenants.models import PausableQuerySet, Tenant
from tenants.queues import queue_for

RUNS_PER_PAGE = 10


def _max_length(name: str) -> int:
    """The longest value Task's field ``name`` holds."""
    field = Task._meta.get_field(name)
    if not isinstance(field, Field) or field.max_length is None:
        raise ImproperlyConfigured(
            f"Task.{name} has no max_length; the cron preview bounds its parameter by it."
        )
    return field.max_length


#: The cron preview's parameters and the longest value each accepts.
PREVIEW_PARAMS = {
    "cron": _max_length("cron"),
    "timezone": _max_length("timezone"),
    "integration": 18,
}
_INTEGRATION_ID = re.compile(r"[0-9]{1,18}")


def preview_params(query: QueryDict) -> dict[str, str]:
    """The cron preview's parameters; ValidationError saying what is wrong with junk.

    Each is optional and given at most once, bounded in length, free of NUL bytes;
    ``integration`` is an integration id. Other parameters (a cache buster) are ignored.
    """
    values = {}
    for name, limit in PREVIEW_PARAMS.items():
        given = query.getlist(name)
        if len(given) > 1:
            raise ValidationError(f"Give '{name}' once, not {len(given)} times.")
        value = given[0] if given else ""
        if "\x00" in value:
            raise ValidationError(f"'{name}' contains a NUL byte; remove it.")
        if len(value) > limit:
            raise ValidationError(
                f"'{name}' is {len(value)} characters long; at most {limit} are accepted."
            )
        values[name] = value
    if values["integration"] and not _INTEGRATION_ID.fullmatch(values["integration"]):
        raise ValidationError(
            "'integration' must be an integration id, a whole number such as 12; "
            f"got {values['integration'][:40]!r}."
        )
    return values


def _moment(value: dt.datetime | None) -> str:
    """A time in the site's zone, to the second, in a column as narrow as it can be."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}<br>{}</time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        local.strftime("%b %d"),
        local.strftime("%H:%M:%S"),
    )


def job_link(job_id: int | None) -> str:
    if job_id is None:
        return "—"
    url = reverse("admin:procrastinate_procrastinatejob_change", args=[job_id])
    return format_html('<a href="{}">job {}</a>', url, job_id)


class LastRunStatusFilter(admin.SimpleListFilter):
    title = "status of last run"
    parameter_name = "last_status"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [*TaskRun.Status.choices, ("none", "Never ran")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "none":
            return queryset.filter(last_status__isnull=True)
        if self.value():
            return queryset.filter(last_status=self.value())
        return queryset


class PausedFilter(admin.SimpleListFilter):
    title = "paused"
    parameter_name = "paused"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", "Paused"), ("no", "Not paused")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not isinstance(queryset, PausableQuerySet):
            raise ImproperlyConfigured(
                f"PausedFilter filters {queryset.model._meta.label}, whose queryset is not a "
                "PausableQuerySet; use it on Pausable models only."
            )
        if self.value() == "yes":
            return queryset.paused()
        if self.value() == "no":
            return queryset.not_paused()
        return queryset


def _exact(value: dt.datetime | None) -> str:
    """A time on a detail page: in the site's zone, to the second, with the zone."""
    if value is None:
        return "—"
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def task_cell(task: Task) -> str:
    """A task in a list: ``integration.name`` with its cron on a line of its own."""
    return format_html(
        '{}.{} <code class="mt-cron">{}</code>', task.integration.name, task.name, task.cron
    )


def pending_retry_times(runs: list[TaskRun]) -> dict[int, dt.datetime]:
    """Job id -> when its retry is due, for the runs waiting for a retry; one query."""
    waiting = [
        r.job_id
        for r in runs
        if r.job_id is not None and r.status == TaskRun.Status.TODO and r.attempt_log
    ]
    if not waiting:
        return {}
    jobs = ProcrastinateJob.objects.filter(id__in=waiting, status="todo").values_list(
        "id", "scheduled_at"
    )
    return {job_id: when for job_id, when in jobs if when is not None}


@admin.register(Task)
class TaskAdmin(TenantScopedAdmin):
    """Tasks: a list that shows only what is unusual, and a page that opens on the runs."""

    form = TaskForm
    change_form_template = "admin/scheduler/task/change_form.html"
    list_display = [
        "task_display",
        "tenant",
        "state_display",
        "last_run_display",
        "next_run_display",
        "missed_display",
        "skipped_display",
    ]
    list_display_links = ["task_display"]
    list_filter = [
        ("tenant", admin.RelatedOnlyFieldListFilter),
        ValuesFilter.of("integration__name", "integration type"),
        "enabled",
        PausedFilter,
        LastRunStatusFilter,
    ]
    search_fields = ["name", "cron", "tenant__name", "integration__name"]
    list_select_related = ["integration__tenant", "tenant"]
    autocomplete_fields = ["integration"]
    actions = [
        actions.enable_tasks,
        actions.disable_tasks,
        actions.pause_tasks,
        actions.resume_tasks,
        actions.run_tasks_now,
    ]
    fieldsets = [
        (
            None,
            {"fields": ["integration", "tenant", "name", "cron", "timezone", "kwargs", "enabled"]},
        ),
        (
            "Policies",
            {
                "fields": [
                    "catchup",
                    "catchup_window",
                    "catchup_max",
                    "overlap",
                    "max_attempts",
                    "retry_backoff",
                ]
            },
        ),
        ("Pause", {"fields": ["paused_at", "pause_note", "paused_until"]}),
        ("Schedule", {"fields": list(SCHEDULER_FIELDS)}),  # written by the tick only
    ]
    readonly_fields = [*SCHEDULER_FIELDS, "paused_at"]

    class Media:
        css = {"all": ["scheduler/task.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        latest = TaskRun.objects.filter(task=OuterRef("pk")).order_by("-scheduled_for", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                last_status=Subquery(latest.values("status")[:1]),
                last_run_for=Subquery(latest.values("scheduled_for")[:1]),
            )
        )

    @admin.display(description="task", ordering="name")
    def task_display(self, obj: Task) -> str:
        return task_cell(obj)

    def paused_display(self, obj: Task) -> bool:
        """Whether the list shows the task as paused (a pause whose end passed is over)."""
        return obj.is_paused()

    @admin.display(description="state")
    def state_display(self, obj: Task) -> str:
        """Only what is unusual: paused (until when), disabled, not plannable; else empty."""
        badges = []
        if not obj.enabled:
            badges.append(status_badge("disabled"))
        if self.paused_display(obj):
            until = obj.paused_until
            badges.append(
                format_html(
                    '<span title="{}">{}{}</span>',
                    obj.pause_note or "paused",
                    status_badge("paused"),
                    format_html(" until {}", _moment(until)) if until else "",
                )
            )
        if obj.plan_error:
            badges.append(
                format_html(
                    '<span title="{}">{}</span>', obj.plan_error, status_badge("plan_error")
                )
            )
        return format_html_join(" ", "{}", ((b,) for b in badges))

    @admin.display(description="last run", ordering="last_run_for")
    def last_run_display(self, obj: Task) -> str:
        """The latest run's status badge and how long ago it was due (run now included)."""
        status = getattr(obj, "last_status", None)
        if status is None:
            return "—"
        when = getattr(obj, "last_run_for", None)
        return format_html(
            '{}<br><span class="mt-ago" title="{}">{}</span>',
            status_badge(status),
            timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "",
            ago(when, timezone.now()),
        )

    @admin.display(description="next run", ordering="next_run_at")
    def next_run_display(self, obj: Task) -> str:
        return _moment(obj.next_run_at)

    @admin.display(description="missed", ordering="missed_count")
    def missed_display(self, obj: Task) -> int:
        return obj.missed_count

    @admin.display(description="skipped", ordering="skipped_count")
    def skipped_display(self, obj: Task) -> int:
        return obj.skipped_count

    def save_model(self, request: HttpRequest, obj: Task, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        form.warn(request)  # e.g. a cron that looks written seconds-first

    def get_urls(self) -> list:
        preview = self.admin_site.admin_view(self.cron_preview_view)
        return [
            path("cron-preview/", preview, name="scheduler_task_cron_preview"),
            *super().get_urls(),
        ]

    def cron_preview_view(self, request: HttpRequest) -> JsonResponse:
        """JSON for the change form's live preview; the zone defaults to the tenant's.

        Junk parameters answer 400 with ``{"ok": false, "error": ...}``. An integration the
        user may not see is treated as none given (UTC), so its tenant's zone stays hidden.
        """
        try:
            params = preview_params(request.GET)
        except ValidationError as exc:
            return JsonResponse({"ok": False, "error": " ".join(exc.messages)}, status=400)
        zone = params["timezone"]
        if not zone and params["integration"]:
            integration = (
                scope(Integration.objects.all(), request.user, "tenant")
                .filter(pk=int(params["integration"]))
                .select_related("tenant")
                .first()
            )
            if integration is not None:
                zone = integration.tenant.timezone
        return JsonResponse(cron_preview(params["cron"], zone or "UTC"))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ):
        """The form, with the run history above it (newest first, each run's attempts)."""
        extra_context = dict(extra_context or {})
        task = self.get_object(request, object_id)  # 404 when missing or not the user's
        runs = TaskRun.objects.filter(task=task).order_by("-scheduled_for", "-id")
        runs_page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("runs_page"))
        page_runs = list(runs_page)
        extra_context["runs_page"] = runs_page
        extra_context["history"] = history_rows(page_runs, pending_retry_times(page_runs))
        extra_context["preview"] = cron_preview(task.cron, task.effective_timezone)
        return super().change_view(request, object_id, form_url, extra_context)


#: What a run's page shows below its attempts, every one read-only.
RUN_PAGE_FIELDS = (
    "task",
    "tenant",
    "intended_exact",
    "origin_display",
    "status_display",
    "job",
    "enqueued_exact",
    "started_exact",
    "finished_exact",
    "duration_display",
    "error_display",
)


@admin.register(TaskRun)
class TaskRunAdmin(TenantScopedAdmin):
    """Runs: status badges and readable durations; each run's page lists its attempts."""

    list_display = [
        "task_display",
        "tenant",
        "intended_display",
        "status_display",
        "started_display",
        "duration_display",
        "job",
    ]
    list_display_links = ["task_display"]
    list_filter = [
        "status",
        "manual",
        ("enqueued_at", admin.DateFieldListFilter),
        TenantFilter,
    ]
    search_fields = ["task__name", "error"]
    list_select_related = ["task__integration", "tenant"]
    change_form_template = "admin/scheduler/taskrun/change_form.html"
    fields = RUN_PAGE_FIELDS
    readonly_fields = RUN_PAGE_FIELDS
    # Runs grow by millions a day: the list is read newest first along the primary key (no
    # sort of every run), counted up to a cap, and filtered by ranges of an indexed time
    # (a date hierarchy or facet counts would read every run).
    ordering = ["-id"]
    paginator = CappedPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    class Media:
        css = {"all": ["scheduler/task.css"]}

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ):
        """The run's fields, its attempts above them (each a row: when, outcome, error)."""
        extra_context = dict(extra_context or {})
        run = self.get_object(request, object_id)  # 404 when missing or not the user's
        due = pending_retry_times([run]).get(run.job_id) if run.job_id is not None else None
        extra_context["attempts"] = attempts_of(run, due)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="intended")
    def intended_exact(self, obj: TaskRun) -> str:
        return _exact(obj.scheduled_for)

    @admin.display(description="started by")
    def origin_display(self, obj: TaskRun) -> str:
        return "run now" if obj.manual else "the schedule"

    @admin.display(description="enqueued")
    def enqueued_exact(self, obj: TaskRun) -> str:
        return _exact(obj.enqueued_at)

    @admin.display(description="started")
    def started_exact(self, obj: TaskRun) -> str:
        return _exact(obj.started_at)

    @admin.display(description="finished")
    def finished_exact(self, obj: TaskRun) -> str:
        return _exact(obj.finished_at)

    @admin.display(description="error")
    def error_display(self, obj: TaskRun) -> str:
        """The last error with its traceback (masked when it was stored); empty when none."""
        if not obj.error:
            return "—"
        return format_html('<pre class="mt-trace">{}</pre>', obj.error)

    @admin.display(description="task", ordering="task__name")
    def task_display(self, obj: TaskRun) -> str:
        return task_cell(obj.task)

    @admin.display(description="intended", ordering="scheduled_for")
    def intended_display(self, obj: TaskRun) -> str:
        manual = format_html(" {}", status_badge("manual")) if obj.manual else ""
        return format_html("{}{}", _moment(obj.scheduled_for), manual)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: TaskRun) -> str:
        """The status badge, and the number of attempts when there was more than one."""
        if obj.attempts > 1:
            return format_html(
                '{}<br><span class="mt-ago">{} attempts</span>',
                status_badge(obj.status),
                obj.attempts,
            )
        return status_badge(obj.status)

    @admin.display(description="started", ordering="started_at")
    def started_display(self, obj: TaskRun) -> str:
        return _moment(obj.started_at)

    @admin.display(description="duration")
    def duration_display(self, obj: TaskRun) -> str:
        return format_duration(obj.duration)

    @admin.display(description="job")
    def job(self, obj: TaskRun) -> str:
        return job_link(obj.job_id)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class QueueFilter(admin.SimpleListFilter):
    """Tenants by queue; lists only the queues the user may see."""

    title = "tenant (queue)"
    parameter_name = "queue"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        tenants = Tenant.objects.order_by("name")
        ids = tenant_roles(request.user) if not request.user.is_superuser else None
        if ids is not None:
            tenants = tenants.filter(pk__in=list(ids))
        choices = [(queue_for(t), f"{t.name} ({queue_for(t)})") for t in tenants]
        if request.user.is_superuser:
            choices.append((SCHEDULER_QUEUE, SCHEDULER_QUEUE))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(queue_name=self.value()) if self.value() else queryset


TaskNameFilter = ValuesFilter.of("task_name", "task")


if admin.site.is_registered(ProcrastinateJob):
    admin.site.unregister(ProcrastinateJob)


@admin.register(ProcrastinateJob)
class JobAdmin(AllowlistedQueryAdmin):
    """procrastinate's jobs, scoped by queue (a tenant's queue is its id).

    Tenant jobs only unless system jobs are asked for; each row's tenant name, intended
    time, attempt times and duration are read for the whole page at once
    (:mod:`scheduler.job_list`).
    """

    list_display = [
        "id",
        "task_display",
        "tenant_queue",
        "status_display",
        "intended",
        "started",
        "finished",
        "duration",
        "attempts_display",
    ]
    list_filter = ["status", QueueFilter, TaskNameFilter, SystemJobsFilter]
    search_fields = ["task_name", "queue_name"]
    readonly_fields = [
        "id",
        "task_name",
        "task_link",
        "tenant_queue",
        "status_display",
        "intended",
        "scheduled_at",
        "started",
        "finished",
        "duration",
        "attempts_display",
        "args",
        "lock",
        "queueing_lock",
        "priority",
    ]
    fields = tuple(readonly_fields)
    actions = [actions.retry_jobs, actions.cancel_jobs, actions.abort_jobs]

    @admin.display(description="task", ordering="task_name")
    def task_display(self, obj: ProcrastinateJob) -> str:
        # A long name may break after its dots (metronome.<wbr>maintenance), not mid-word;
        # the title keeps it whole.
        name = mark_safe(escape(obj.task_name).replace(".", ".<wbr>"))
        task_id = (obj.args or {}).get("task_id") if isinstance(obj.args, dict) else None
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            return format_html('<span title="{}">{}</span>', obj.task_name, name)
        url = reverse("admin:scheduler_task_change", args=[task_id])
        return format_html(
            '<a href="{}" title="{} (task {})">{}</a>', url, obj.task_name, task_id, name
        )

    @admin.display(description="tenant (queue)", ordering="queue_name")
    def tenant_queue(self, obj: ProcrastinateJob) -> str:
        name = details_of(obj).tenant_name
        if name is None:
            return format_html('<span class="mt-queue">{}</span>', obj.queue_name)
        return format_html('{} <span class="mt-queue">({})</span>', name, obj.queue_name)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: ProcrastinateJob) -> str:
        return status_badge(obj.status)

    @admin.display(description="intended")
    def intended(self, obj: ProcrastinateJob) -> str:
        return _moment(details_of(obj).intended)

    @admin.display(description="started")
    def started(self, obj: ProcrastinateJob) -> str:
        return _moment(details_of(obj).started)

    @admin.display(description="finished")
    def finished(self, obj: ProcrastinateJob) -> str:
        return _moment(details_of(obj).finished)

    @admin.display(description="duration")
    def duration(self, obj: ProcrastinateJob) -> str:
        return format_duration(details_of(obj).duration)

    @admin.display(description="attempts", ordering="attempts")
    def attempts_display(self, obj: ProcrastinateJob) -> int:
        return details_of(obj).attempts

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = with_details(super().get_queryset(request))
        queues = visible_queues(request.user)
        return queryset if queues is None else queryset.filter(queue_name__in=queues)

    @admin.display(description="task")
    def task_link(self, obj: ProcrastinateJob) -> str:
        task_id = (obj.args or {}).get("task_id") if isinstance(obj.args, dict) else None
        if task_id is None:
            return "—"
        url = reverse("admin:scheduler_task_change", args=[task_id])
        return format_html('<a href="{}">task {}</a>', url, task_id)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or bool(tenant_roles(request.user))

    def has_view_permission(
        self, request: HttpRequest, obj: ProcrastinateJob | None = None
    ) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        queues = visible_queues(request.user)
        return queues is None or obj.queue_name in queues

    def has_change_permission(
        self, request: HttpRequest, obj: ProcrastinateJob | None = None
    ) -> bool:
        # Actions only, for those who may edit some tenant; viewers read.
        return obj is None and may_run_actions(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ProcrastinateJob | None = None
    ) -> bool:
        return False


@admin.register(SchedulerTick)
class SchedulerTickAdmin(AllowlistedQueryAdmin):
    list_display = [
        "tick_time",
        "started_at",
        "duration",
        "due",
        "deferred",
        "skipped",
        "missed",
        "blocked",
        "errors",
    ]
    date_hierarchy = "started_at"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser  # figures across all tenants

    def has_view_permission(self, request: HttpRequest, obj: SchedulerTick | None = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SchedulerTick | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SchedulerTick | None = None) -> bool:
        return False
