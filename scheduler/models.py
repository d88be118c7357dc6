"""Scheduled Tasks, the record of every run deferred for them, and the scheduler's ticks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from integrations.models import CheckedQuerySet, Integration
from scheduler import policies
from scheduler.cron import next_fire, validate_cron
from tenants.models import Pausable, PausableQuerySet, Tenant, validate_time_zone

#: Fields only the scheduler writes; a plain save() leaves them alone so that an edit
#: made with a stale instance never rewinds the schedule (which could replay a tick).
SCHEDULER_FIELDS = (
    "next_run_at",
    "last_run_at",
    "missed_count",
    "skipped_count",
    "last_skipped_at",
    "plan_error",
    "plan_error_at",
)


# django-stubs gives every QuerySet subclass its own as_manager: two such bases always clash.
class TaskQuerySet(CheckedQuerySet, PausableQuerySet):  # type: ignore[override]
    """Tasks; ``update(cron=...)`` and bulk writes refuse an invalid cron."""

    checked_fields: ClassVar[dict[str, Callable[[Any], object]]] = {"cron": validate_cron}


class Task(Pausable):
    """A cron schedule for one task of an integration (what ``Integration.add_task`` creates)."""

    class Catchup(models.TextChoices):  # the names are policies.Catchup's
        SKIP = policies.Catchup.SKIP.value, "Skip missed ticks"
        LATEST = policies.Catchup.LATEST.value, "Run once for the latest missed tick"
        ALL = policies.Catchup.ALL.value, "Run every missed tick (within the window)"

    class Overlap(models.TextChoices):  # the names are policies.Overlap's
        SKIP = policies.Overlap.SKIP.value, "Skip while a run is queued or running"
        BUFFER_ONE = policies.Overlap.BUFFER_ONE.value, "Queue at most one behind the running one"
        ALLOW = policies.Overlap.ALLOW.value, "Always start a new run"

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

    catchup = models.CharField(
        max_length=16,
        choices=Catchup.choices,
        default=Catchup.LATEST,
        help_text="What to do with ticks missed while the scheduler was down.",
    )
    catchup_window = models.DurationField(
        default=dt.timedelta(hours=24),
        help_text="With catch-up 'all': only missed ticks this recent are run.",
    )
    catchup_max = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="With catch-up 'all': at most this many missed ticks are run (the latest).",
    )
    overlap = models.CharField(
        max_length=16,
        choices=Overlap.choices,
        default=Overlap.SKIP,
        help_text="What to do when a tick comes while a previous run is queued or running.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Attempts per run, the first included (1 = no retry).",
    )
    retry_backoff = models.DurationField(
        default=dt.timedelta(seconds=60),
        help_text="Wait before the first retry; doubled for each further retry.",
    )

    next_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Intended time of the latest run."
    )
    missed_count = models.PositiveIntegerField(
        default=0, editable=False, help_text="Ticks missed and not run (catch-up policy)."
    )
    skipped_count = models.PositiveIntegerField(
        default=0, editable=False, help_text="Ticks skipped by the overlap policy."
    )
    last_skipped_at = models.DateTimeField(null=True, blank=True, editable=False)
    plan_error = models.TextField(
        blank=True,
        default="",
        db_default="",
        editable=False,
        help_text="Why the scheduler could not plan this task's runs; empty when it can. "
        "It retries every tick and clears this once planning succeeds.",
    )
    plan_error_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Tick at which this error first came."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = models.Manager.from_queryset(TaskQuerySet)()

    class Meta:
        ordering = ["tenant", "integration", "name", "id"]
        indexes = [
            # The scheduler tick's main query: enabled tasks due now.
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(enabled=True),
                name="task_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.integration.name}.{self.name} [{self.cron}]"

    def save(self, *args: Any, now: dt.datetime | None = None, **kwargs: Any) -> None:
        if kwargs.get("update_fields") is None or "cron" in kwargs["update_fields"]:
            TaskQuerySet.check_value("cron", self.cron)  # same error as full_clean
        integration = self._integration_or_none()
        if integration is None:
            raise ValidationError({"integration": "A task needs an integration."})
        if self.tenant_id is None:
            self.tenant_id = integration.tenant_id
        if self.tenant_id != integration.tenant_id:
            raise ValidationError({"tenant": "A task always belongs to its integration's tenant."})
        update_fields = kwargs.get("update_fields")
        if self._schedule_changed():
            self.schedule_next(now or timezone.now())
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "next_run_at"}
        elif self.pk is not None and not self._state.adding and update_fields is None:
            kwargs["update_fields"] = [
                f.attname
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in SCHEDULER_FIELDS
            ]
        super().save(*args, **kwargs)
        self._saved_schedule = self._schedule_key()

    @classmethod
    def from_db(
        cls,
        db: str | None,
        field_names: Collection[str],
        values: Collection[Any],
        **kwargs: Any,
    ) -> Task:
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._saved_schedule = instance._schedule_key()
        return instance

    def _schedule_key(self) -> tuple[Any, ...]:
        return (self.cron, self.timezone, self.enabled, self.tenant_id)

    def _schedule_changed(self) -> bool:
        return getattr(self, "_saved_schedule", None) != self._schedule_key() or (
            self.enabled and self.next_run_at is None
        )

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
        if self.catchup_window is not None and self.catchup_window <= dt.timedelta(0):
            errors.setdefault("catchup_window", []).append(
                "The catch-up window must be a positive duration, e.g. 24:00:00."
            )
        if self.retry_backoff is not None and self.retry_backoff < dt.timedelta(0):
            errors.setdefault("retry_backoff", []).append(
                "The retry backoff cannot be negative; use 0 to retry at once."
            )
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

    def retry_policy(self) -> dict[str, Any]:
        """What the job carries so procrastinate's retry follows this Task's policy."""
        return {
            "max_attempts": self.max_attempts,
            "backoff_seconds": self.retry_backoff.total_seconds(),
        }


class TaskRun(models.Model):
    """One deferred execution of a Task; outlives the procrastinate job it mirrors.

    Every write goes through :mod:`scheduler.run_records`. The status follows the job's:
    the database trigger ``metronome_sync_task_run`` fires after each UPDATE that changes
    a ``procrastinate_jobs`` row's status and, in the same transaction, marks this run
    doing (a new ``attempt_log`` entry), succeeded, failed or cancelled (closing the
    entry), or back to todo for a retry (``scheduler/sql/taskrun_status_trigger.sql``;
    system check ``scheduler.E001`` verifies it is installed and current).
    """

    class Status(models.TextChoices):
        TODO = "todo", "To do"
        DOING = "doing", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.TODO, Status.DOING)

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="task_runs")
    scheduled_for = models.DateTimeField(help_text="The tick this run is for.")
    manual = models.BooleanField(default=False, help_text="Started with 'run now'.")
    job_id = models.BigIntegerField(
        null=True, blank=True, db_index=True, help_text="procrastinate job id (may be purged)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TODO)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(
        default=list, blank=True, help_text="One entry per attempt: start, end, outcome, error."
    )
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            # Exactly once per (task, tick), whatever the number of schedulers.
            models.UniqueConstraint(fields=["task", "scheduled_for"], name="unique_run_per_tick"),
        ]
        indexes = [
            models.Index(fields=["tenant", "status"]),
            # /metrics reads the last hour's lateness, the dashboard the last day's runs.
            models.Index(fields=["started_at"], name="taskrun_started_idx"),
            models.Index(fields=["enqueued_at"], name="taskrun_enqueued_idx"),
            models.Index(
                fields=["task"],
                condition=models.Q(status__in=["todo", "doing"]),
                name="taskrun_active_idx",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"run of task {self.task_id} for {self.scheduled_for:%Y-%m-%d %H:%M:%S} ({self.status})"
        )

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class SchedulerTick(models.Model):
    """The scheduler's heartbeat: when each tick ran and what it did."""

    tick_time = models.DateTimeField(help_text="The periodic time the tick was for.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    due = models.PositiveIntegerField(default=0)
    deferred = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Skipped by overlap policies.")
    missed = models.PositiveIntegerField(default=0, help_text="Missed ticks not run (catch-up).")
    blocked = models.PositiveIntegerField(
        default=0, help_text="Due but paused, or tenant/integration disabled."
    )
    errors = models.PositiveIntegerField(
        default=0, help_text="Due Tasks that could not be planned (see their plan error)."
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["-started_at"], name="tick_recent_idx")]

    def __str__(self) -> str:
        return f"tick {self.tick_time:%Y-%m-%d %H:%M:%S}: {self.deferred} deferred"

    @property
    def duration(self) -> dt.timedelta:
        return self.finished_at - self.started_at


class WorkerInfo(models.Model):
    """What procrastinate's workers table lacks: each worker's name, queues and host.

    The primary key is procrastinate's worker id; liveness comes from that table's
    heartbeat (rows of workers that procrastinate pruned are ignored and cleaned up).
    """

    id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=200, blank=True)
    queues = models.JSONField(null=True, blank=True, help_text="null means all queues")
    hostname = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True)
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "worker"

    def __str__(self) -> str:
        return f"{self.name or 'worker'} {self.id} on {self.hostname}:{self.pid}"
