"""Scheduled Tasks and the record of every run the scheduler deferred for them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from integrations.models import Integration
from scheduler.cron import next_fire, validate_cron
from tenants.models import Tenant, validate_time_zone

Clock = Callable[[], dt.datetime]


class Task(models.Model):
    """A cron schedule for one task of an integration (the seed's ``add_task``)."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="tasks")
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        related_name="tasks",
        blank=True,
        help_text="Always the integration's tenant (set from it when left empty).",
    )
    name = models.CharField(max_length=100, help_text="A task of the integration type.")
    cron = models.CharField(
        max_length=120,
        validators=[validate_cron],
        help_text="minute hour day-of-month month day-of-week [second], e.g. */15 * * * *",
    )
    timezone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_time_zone],
        help_text="IANA zone the cron is read in; empty means the tenant's zone.",
    )
    kwargs = models.JSONField(
        default=dict, blank=True, help_text="Keyword arguments for the task (a JSON object)."
    )
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "integration", "name", "id"]
        indexes = [
            # The scheduler tick's only query: enabled tasks due now.
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(enabled=True),
                name="task_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.integration.name}.{self.name} [{self.cron}]"

    def save(self, *args: Any, now: dt.datetime | None = None, **kwargs: Any) -> None:
        integration = self._integration_or_none()
        if integration is None:
            raise ValidationError({"integration": "A task needs an integration."})
        if self.tenant_id is None:
            self.tenant_id = integration.tenant_id
        if self.tenant_id != integration.tenant_id:
            raise ValidationError({"tenant": "A task always belongs to its integration's tenant."})
        if getattr(self, "_saved_schedule", None) != self._schedule_key() or (
            self.enabled and self.next_run_at is None
        ):
            self.schedule_next(now or timezone.now())
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "next_run_at"}
        super().save(*args, **kwargs)
        self._saved_schedule = self._schedule_key()

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Task:
        instance = super().from_db(db, field_names, values)
        instance._saved_schedule = instance._schedule_key()
        return instance

    def _schedule_key(self) -> tuple[Any, ...]:
        return (self.cron, self.timezone, self.enabled, self.tenant_id)

    @property
    def effective_timezone(self) -> str:
        return self.timezone or self.tenant.timezone

    def clean(self) -> None:
        errors: dict[str, list[str]] = {}
        integration = self._integration_or_none()
        if integration is None:
            raise ValidationError({"integration": "Choose the integration this task belongs to."})
        if self.tenant_id is None:
            self.tenant_id = integration.tenant_id
        elif self.tenant_id != integration.tenant_id:
            errors.setdefault("tenant", []).append(
                f"The task's tenant ({self.tenant_id}) differs from its integration's tenant "
                f"({integration.tenant_id}); a task always belongs to its integration's tenant."
            )
        try:
            spec = integration.type.get_task(self.name)
        except ValidationError as exc:
            errors.setdefault("name", []).extend(exc.messages)
            spec = None
        if not isinstance(self.kwargs, dict):
            errors.setdefault("kwargs", []).append(
                'kwargs must be a JSON object, e.g. {} or {"since_days": 7}; '
                f"got {type(self.kwargs).__name__}."
            )
        elif spec is not None:
            try:
                spec.validate_kwargs(self.kwargs)
            except ValidationError as exc:
                errors.setdefault("kwargs", []).extend(exc.messages)
        if errors:
            raise ValidationError(errors)

    def _integration_or_none(self) -> Integration | None:
        if self.integration_id is None:
            return None
        return self.integration

    def schedule_next(self, now: dt.datetime) -> dt.datetime | None:
        """Set ``next_run_at`` to the first fire time after ``now`` (None when disabled)."""
        self.next_run_at = (
            next_fire(self.cron, now, self.effective_timezone) if self.enabled else None
        )
        return self.next_run_at


class TaskRun(models.Model):
    """One deferred execution of a Task; outlives the procrastinate job it mirrors."""

    class Status(models.TextChoices):
        TODO = "todo", "To do"
        DOING = "doing", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="task_runs")
    scheduled_for = models.DateTimeField(help_text="The tick this run is for.")
    job_id = models.BigIntegerField(
        null=True, blank=True, db_index=True, help_text="procrastinate job id (may be purged)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TODO)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            # Exactly once per (task, tick), whatever the number of schedulers.
            models.UniqueConstraint(fields=["task", "scheduled_for"], name="unique_run_per_tick"),
        ]
        indexes = [models.Index(fields=["tenant", "status"])]

    def __str__(self) -> str:
        return (
            f"run of task {self.task_id} for {self.scheduled_for:%Y-%m-%d %H:%M:%S} ({self.status})"
        )

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
