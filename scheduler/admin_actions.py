"""Admin actions on Tasks and jobs. Each acts only on rows the user may edit
and says how many it changed and how many it left alone (and why)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from procrastinate.contrib.django import app

from audit import records as audit
from audit.models import AuditEntry
from scheduler import jobs
from scheduler.runs import run_now
from tenants.access import editable_tenant_ids
from tenants.admin_actions import editable, pause_selected, report, resume_selected
from tenants.queues import tenant_for


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


@admin.action(description="Pause selected tasks…")
def pause_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet):
    return pause_selected(modeladmin, request, queryset, "tenant_id")


@admin.action(description="Resume selected tasks")
def resume_tasks(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    resume_selected(request, queryset, "tenant_id")


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


def _job_action(request: HttpRequest, queryset: QuerySet, status: str, verb: str, act, action: str):
    from tenants.access import visible_queues

    queues = visible_queues(request.user)
    editable_ids = editable_tenant_ids(request.user)
    done = skipped = 0
    for job in queryset:
        tenant_id = tenant_for(job.queue_name)
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
        jobs.retry_failed_job(job.id, timezone.now())

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
