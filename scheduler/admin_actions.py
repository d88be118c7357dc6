"""Admin actions on Tasks, Tenants and jobs. Each acts only on rows the user may edit
and says how many it changed and how many it left alone (and why)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from procrastinate.contrib.django import app

from scheduler import audit
from scheduler.admin_forms import PauseForm
from scheduler.models import AuditEntry
from scheduler.runs import run_now
from tenants.access import editable_tenant_ids


def editable(queryset: QuerySet, request: HttpRequest, tenant_field: str = "tenant_id") -> QuerySet:
    ids = editable_tenant_ids(request.user)
    return queryset if ids is None else queryset.filter(**{f"{tenant_field}__in": ids})


def report(request: HttpRequest, done: int, verb: str, skipped: int = 0, why: str = "") -> None:
    text = f"{done} {verb}."
    if skipped:
        text += f" {skipped} skipped: {why}."
    messages.add_message(request, messages.SUCCESS if not skipped else messages.WARNING, text)


def _set_enabled(request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
    allowed = editable(queryset, request)
    done = 0
    for task in allowed.filter(enabled=not enabled):
        task.enabled = enabled  # save() reschedules (or unschedules) the task
        task.save()
        done += 1
    verb = "enabled" if enabled else "disabled"
    report(request, done, f"task(s) {verb}", queryset.count() - allowed.count(), "read-only tenant")


@admin.action(description="Enable selected tasks")
def enable_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    _set_enabled(request, queryset, True)


@admin.action(description="Disable selected tasks")
def disable_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    _set_enabled(request, queryset, False)


def _pause(modeladmin: Any, request: HttpRequest, queryset: QuerySet, tenant_field: str):
    """Two steps: the pause form, then the pause itself."""
    allowed = editable(queryset, request, tenant_field)
    form = PauseForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        done, errors = 0, []
        for obj in allowed:
            try:
                obj.pause(form.cleaned_data["note"], until=form.cleaned_data["until"])
                done += 1
            except ValidationError as exc:
                errors.append(" ".join(exc.messages))
        report(
            request,
            done,
            f"{queryset.model._meta.verbose_name_plural} paused",
            len(errors),
            "; ".join(sorted(set(errors))),
        )
        return None
    return TemplateResponse(
        request,
        "admin/scheduler/pause_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": f"Pause {queryset.model._meta.verbose_name_plural}",
            "objects": allowed,
            "form": form,
            "action": request.POST.get("action"),
            "opts": modeladmin.model._meta,
        },
    )


@admin.action(description="Pause selected tasks…")
def pause_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet):
    return _pause(modeladmin, request, queryset, "tenant_id")


@admin.action(description="Pause all tasks of selected tenants…")
def pause_tenants(modeladmin: Any, request: HttpRequest, queryset: QuerySet):
    return _pause(modeladmin, request, queryset, "pk")


def _resume(request: HttpRequest, queryset: QuerySet, tenant_field: str) -> None:
    allowed = editable(queryset, request, tenant_field)
    done = 0
    for obj in allowed.filter(paused_at__isnull=False):
        obj.resume()
        done += 1
    report(request, done, f"{queryset.model._meta.verbose_name_plural} resumed")


@admin.action(description="Resume selected tasks")
def resume_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    _resume(request, queryset, "tenant_id")


@admin.action(description="Resume all tasks of selected tenants")
def resume_tenants(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    _resume(request, queryset, "pk")


@admin.action(description="Run selected tasks now")
def run_tasks_now(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    done, errors = 0, []
    for task in editable(queryset, request):
        try:
            run = run_now(task)
        except ValidationError as exc:
            errors.append(" ".join(exc.messages))
            continue
        audit.record(
            AuditEntry.Action.RUN_NOW, task, {"run": [None, run.pk], "job": [None, run.job_id]}
        )
        done += 1
    report(request, done, "run(s) started", len(errors), " ".join(errors))


def _tenant_of_queue(queue: str) -> int | None:
    return int(queue) if queue.isdigit() else None


def _job_action(request: HttpRequest, queryset: QuerySet, status: str, verb: str, act, action: str):
    from tenants.access import visible_queues

    queues = visible_queues(request.user)
    editable_ids = editable_tenant_ids(request.user)
    done = skipped = 0
    for job in queryset:
        tenant_id = _tenant_of_queue(job.queue_name)
        may_edit = editable_ids is None or tenant_id in (editable_ids or [])
        if (
            job.status != status
            or not may_edit
            or (queues is not None and job.queue_name not in queues)
        ):
            skipped += 1
            continue
        act(job)
        audit.record(action, job, {"status": [job.status, verb]}, tenant_id=tenant_id)
        done += 1
    report(request, done, f"job(s) {verb}", skipped, f"only {status} jobs of tenants you edit")


@admin.action(description="Retry selected failed jobs")
def retry_jobs(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    def act(job: Any) -> None:
        app.job_manager.retry_job_by_id(job.id, retry_at=timezone.now())  # TaskRun follows

    _job_action(request, queryset, "failed", "retried", act, AuditEntry.Action.JOB_RETRY)


@admin.action(description="Cancel selected waiting (todo) jobs")
def cancel_jobs(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    def act(job: Any) -> None:
        app.job_manager.cancel_job_by_id(job.id)  # the TaskRun follows (trigger)

    _job_action(request, queryset, "todo", "cancelled", act, AuditEntry.Action.JOB_CANCEL)


@admin.action(description="Abort selected running (doing) jobs")
def abort_jobs(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    def act(job: Any) -> None:
        app.job_manager.cancel_job_by_id(job.id, abort=True)

    _job_action(request, queryset, "doing", "asked to abort", act, AuditEntry.Action.JOB_ABORT)
