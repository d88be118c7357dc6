from __future__ import annotations

from django.contrib import admin

from scheduler.models import Task, TaskRun


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["__str__", "tenant", "enabled", "next_run_at", "last_run_at"]
    list_filter = ["enabled", "tenant", "integration__name"]
    search_fields = ["name", "cron", "tenant__name"]
    list_select_related = ["integration", "tenant"]
    fields = [
        "integration",
        "tenant",
        "name",
        "cron",
        "timezone",
        "kwargs",
        "enabled",
        "next_run_at",
        "last_run_at",
    ]
    readonly_fields = ["next_run_at", "last_run_at"]


@admin.register(TaskRun)
class TaskRunAdmin(admin.ModelAdmin):
    list_display = [
        "task",
        "tenant",
        "scheduled_for",
        "status",
        "attempts",
        "job_id",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "tenant"]
    list_select_related = ["task__integration", "tenant"]
    readonly_fields = [f.name for f in TaskRun._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
