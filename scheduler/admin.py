"""Admin for Tasks, their runs, procrastinate's jobs and the scheduler's ticks."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.paginator import Paginator
from django.db.models import Field, Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, JsonResponse, QueryDict
from django.urls import path, reverse
from django.utils.html import format_html
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler import admin_actions as actions
from scheduler.admin_forms import TaskForm
from scheduler.models import SCHEDULER_FIELDS, SchedulerTick, Task, TaskRun
from scheduler.preview import cron_preview
from scheduler.queues import SCHEDULER_QUEUE
from tenants.access import scope, tenant_roles, visible_queues
from tenants.admin_base import (
    AllowlistedQueryAdmin,
    TenantScopedAdmin,
    ValuesFilter,
    may_run_actions,
)
from tenants.models import PausableQuerySet, Tenant
from tenants.queues import queue_for

RUNS_PER_PAGE = 20


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


@admin.register(Task)
class TaskAdmin(TenantScopedAdmin):
    form = TaskForm
    change_form_template = "admin/scheduler/task/change_form.html"
    list_display = [
        "__str__",
        "tenant",
        "enabled",
        "paused_display",
        "last_status_display",
        "last_run_at",
        "next_run_at",
        "missed_count",
        "skipped_count",
    ]
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

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        latest = TaskRun.objects.filter(task=OuterRef("pk")).order_by("-scheduled_for", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(last_status=Subquery(latest.values("status")[:1]))
        )

    @admin.display(description="paused", boolean=True)
    def paused_display(self, obj: Task) -> bool:
        return obj.is_paused()

    @admin.display(description="last run", ordering="last_status")
    def last_status_display(self, obj: Task) -> str:
        return getattr(obj, "last_status", None) or "—"

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
        extra_context = dict(extra_context or {})
        task = self.get_object(request, object_id)  # 404 when missing or not the user's
        runs = TaskRun.objects.filter(task=task).order_by("-scheduled_for", "-id")
        extra_context["runs_page"] = Paginator(runs, RUNS_PER_PAGE).get_page(
            request.GET.get("runs_page")
        )
        extra_context["preview"] = cron_preview(task.cron, task.effective_timezone)
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(TaskRun)
class TaskRunAdmin(TenantScopedAdmin):
    list_display = [
        "task",
        "tenant",
        "scheduled_for",
        "manual",
        "status",
        "attempts",
        "job",
        "started_at",
        "finished_at",
        "duration",
    ]
    list_filter = ["status", "manual", ("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["task__name", "error"]
    list_select_related = ["task__integration", "tenant"]
    readonly_fields = [f.name for f in TaskRun._meta.fields] + ["job", "duration"]
    date_hierarchy = "scheduled_for"

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
    """procrastinate's jobs, scoped by queue (a tenant's queue is its id)."""

    list_display = [
        "id",
        "task_name",
        "queue_name",
        "status",
        "scheduled_at",
        "attempts",
        "task_link",
    ]
    list_filter = ["status", QueueFilter, TaskNameFilter]
    search_fields = ["task_name", "queue_name"]
    readonly_fields = [
        "id",
        "task_name",
        "queue_name",
        "status",
        "scheduled_at",
        "attempts",
        "args",
        "lock",
        "queueing_lock",
        "priority",
        "task_link",
    ]
    fields = tuple(readonly_fields)
    actions = [actions.retry_jobs, actions.cancel_jobs, actions.abort_jobs]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
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
