"""Scheduled Tasks, the record of every run deferred for them, and the scheduler's ticks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, ClassVar

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import BaseConstraint
from django.db.models.functions import MD5, Cast
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

#: The database constraint refusing a second Task with the same integration, name, cron, time
#: zone and kwargs (it would run the same job twice per tick). ``Task.clean()`` checks it first
#: and names the existing Task; the constraint stops what validation cannot see (two
#: concurrent saves). The kwargs go in as a hash: a btree row holds at most 2.7 kB.
IDENTICAL_TASK_CONSTRAINT = "unique_task_schedule"
#: A Task's (tenant, id): the key TaskRun's foreign key references.
TASK_TENANT_KEY = "unique_task_tenant"


# django-stubs gives every QuerySet subclass its own as_manager: two such bases always clash.
class TaskQuerySet(CheckedQuerySet, PausableQuerySet):  # type: ignore[override]
    """Tasks; ``update(cron=...)`` and bulk writes refuse an invalid cron."""

    checked_fields: ClassVar[dict[str, Callable[[Any], object]]] = {"cron": validate_cron}

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        objs = list(objs)
        assign_tenant_ranks(objs)
        return super().bulk_create(objs, *args, **kwargs)


def assign_tenant_ranks(tasks: Iterable[Task]) -> None:
    """Give each new Task without one the next ``tenant_rank`` of its tenant (one query).
    Two Tasks created at once may share a rank: ranks order, they need not be unique."""
    new = [task for task in tasks if not task.tenant_rank and task.tenant_id is not None]
    if not new:
        return
    tenant_ids = {task.tenant_id for task in new}
    highest = dict(
        Task.objects.filter(tenant_id__in=tenant_ids)
        .order_by()
        .values("tenant_id")
        .annotate(rank=models.Max("tenant_rank"))
        .values_list("tenant_id", "rank")
    )
    for task in new:
        highest[task.tenant_id] = highest.get(task.tenant_id, 0) + 1
        task.tenant_rank = highest[task.tenant_id]


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

    # No index of its own: unique_task_schedule leads with it, and every index of a Task
    # is rewritten each time the scheduler moves its next_run_at.
    integration = models.ForeignKey(
        Integration, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    # No index of its own either: unique_task_tenant (tenant, id) leads with it.
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        related_name="tasks",
        db_index=False,
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
    tenant_rank = models.PositiveIntegerField(
        default=0,
        editable=False,
        help_text="This task's place among its tenant's tasks (1 for the first created): "
        "when many tasks are due at one instant the scheduler takes them rank by rank, "
        "every tenant's first task before any tenant's second.",
    )
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
            # The scheduler tick's main query: enabled tasks due now, in chunks, rank by
            # rank (tenant_rank), so that no chunk holds one tenant's whole list.
            models.Index(
                fields=["next_run_at", "tenant_rank", "tenant", "id"],
                condition=models.Q(enabled=True),
                name="task_due_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                models.F("integration"),
                models.F("name"),
                models.F("cron"),
                models.F("timezone"),
                MD5(Cast("kwargs", models.TextField())),
                name=IDENTICAL_TASK_CONSTRAINT,
            ),
            # What each TaskRun's (tenant, task) foreign key points to (see TaskRun); also
            # the index of a tenant's Tasks.
            models.UniqueConstraint(fields=["tenant", "id"], name=TASK_TENANT_KEY),
        ]

    def __str__(self) -> str:
        return f"{self.integration.name}.{self.name} [{self.cron}]"

    def save(self, *args: Any, now: dt.datetime | None = None, **kwargs: Any) -> None:
        if kwargs.get("update_fields") is None or "cron" in kwargs["update_fields"]:
            TaskQuerySet.check_value("cron", self.cron)  # same error as full_clean
        integration = self._integration_or_none()
        if integration is None or integration.pk is None:
            raise ValidationError({"integration": "A task needs a saved integration."})
        if self.tenant_id is None:
            self.tenant_id = integration.tenant_id
        if self.tenant_id != integration.tenant_id:
            raise ValidationError({"tenant": "A task always belongs to its integration's tenant."})
        update_fields = kwargs.get("update_fields")
        if self._state.adding:
            assign_tenant_ranks([self])
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
        elif _holds_nul(self.kwargs):
            errors.setdefault("kwargs", []).append(
                "kwargs cannot contain the NUL character (\\u0000): PostgreSQL cannot store "
                "it. Remove it from the keys and values."
            )
        elif spec is not None:
            try:
                spec.validate_kwargs(self.kwargs)
            except ValidationError as exc:
                errors.setdefault("kwargs", []).extend(exc.messages)
            identical = self.identical_error()
            if identical is not None:
                errors.setdefault(NON_FIELD_ERRORS, []).extend(identical.messages)
        if self.timezone is None:
            errors.setdefault("timezone", []).append(
                "The time zone cannot be None: give an IANA zone such as 'Europe/Berlin', or "
                "'' for the tenant's zone."
            )
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

    def identical(self) -> Task | None:
        """The saved Task, other than this one, with the same integration, name, cron, time
        zone and kwargs (compared as JSON values, so key order does not matter), if any."""
        if self.integration_id is None or not isinstance(self.kwargs, dict):
            return None
        try:
            json.dumps(self.kwargs)
        except (TypeError, ValueError):
            return None  # not JSON: the kwargs field's own check says so
        texts = (self.name, self.cron, self.timezone)
        if _holds_nul(self.kwargs) or any(isinstance(t, str) and "\x00" in t for t in texts):
            return None  # PostgreSQL cannot compare it; the fields' own checks refuse it
        same = Task.objects.filter(
            integration_id=self.integration_id,
            name=self.name,
            cron=self.cron,
            timezone=self.timezone,
            kwargs=self.kwargs,
        )
        if self.pk is not None:
            same = same.exclude(pk=self.pk)
        return same.order_by("pk").first()

    def identical_error(self) -> ValidationError | None:
        """The error refusing this Task when :meth:`identical` finds one, else None."""
        existing = self.identical()
        if existing is None:
            return None
        message = identical_task_message(existing)
        return ValidationError({NON_FIELD_ERRORS: [ValidationError(message, code="identical")]})

    def get_constraints(self) -> list[tuple[type[models.Model], Sequence[BaseConstraint]]]:
        """Django's constraint checks, without the identical-task one: ``clean()`` checks
        that with a message naming the existing Task instead of a generic one."""
        return [
            (model, [c for c in constraints if c.name != IDENTICAL_TASK_CONSTRAINT])
            for model, constraints in super().get_constraints()
        ]

    def _integration_or_none(self) -> Integration | None:
        """The integration, also one assigned but not saved yet (``add_task`` validates the
        Task of a new integration before saving either)."""
        if self.integration_id is None and not Task.integration.is_cached(self):
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


def _holds_nul(value: object) -> bool:
    """Whether a JSON value holds the NUL character (in a key or a string), which
    PostgreSQL's jsonb refuses."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


def identical_task_message(existing: Task) -> str:
    """Why a Task is refused when ``existing`` already schedules the same job, and what to do."""
    return (
        f"This integration already has an identical task: task {existing.pk}, "
        f"{existing.name} with cron '{existing.cron}', time zone "
        f"{existing.timezone or 'of the tenant'} and kwargs {json.dumps(existing.kwargs)}. "
        "A second one would run the same job twice. Use that task (in the shell, "
        "integration.get_or_add_task(name, cron, ...) returns it), or give this one a "
        "different cron, time zone or kwargs."
    )


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

    # No index of their own: unique_run_per_tick (task, scheduled_for) and the (tenant,
    # status) index lead with them, and every index costs each run's insert.
    #
    # One foreign key in the database covers both: (tenant_id, task_id) references the
    # Task's (tenant_id, id) (``taskrun_task_tenant_fk``, created by migrations: Django has
    # no composite foreign keys), so a run exists only for an existing Task and always
    # carries that Task's tenant, which tenant-scoped access filters on; it follows the Task
    # if its tenant changes. One check per inserted run instead of two, on the path of every
    # run a tick defers.
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="runs", db_index=False, db_constraint=False
    )
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        related_name="task_runs",
        db_index=False,
        db_constraint=False,
    )
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
            # /metrics reads the last hour's lateness. Only started runs: a run is inserted
            # before it starts, and a run's insert is on the path of every tick.
            models.Index(
                fields=["started_at"],
                condition=models.Q(started_at__isnull=False),
                name="taskrun_started_idx",
            ),
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
