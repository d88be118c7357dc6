"""One scheduler tick: turn every due Task into jobs on its tenant's queue.

The tick is one transaction on Django's connection: TaskRun rows, procrastinate job
rows, ``next_run_at`` updates and the tick's own record commit together or not at all
(jobs are inserted through a JobManager on Django's connection, not the worker's pool).
Due Tasks are locked ``FOR UPDATE SKIP LOCKED``, so concurrent schedulers never take
the same Task; a (task, scheduled_for) pair that already has a run is never deferred
again, and a unique constraint backs that. The number of queries does not depend on
the number of due Tasks.

One Task never stops the tick for the others: whatever goes wrong while planning a Task
(its cron or zone, its code or kwargs, its policies) is written on that Task, counted in
the tick's record, and the tick goes on (see :func:`fail_task`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from integrations.base import registry
from scheduler import jobs
from scheduler.cron import next_fire
from scheduler.models import SchedulerTick
from scheduler.policies import plan_catchup, plan_overlap

logger = logging.getLogger(__name__)


@dataclass
class TickResult:
    now: dt.datetime
    due: int = 0
    deferred: list[int] = field(default_factory=list)  # TaskRun ids
    skipped: int = 0
    missed: int = 0
    blocked: int = 0
    errors: dict[int, str] = field(default_factory=dict)  # Task id -> why it was not planned

    def as_dict(self) -> dict[str, object]:
        return {
            "now": self.now.isoformat(),
            "due": self.due,
            "deferred": len(self.deferred),
            "skipped": self.skipped,
            "missed": self.missed,
            "blocked": self.blocked,
            "errors": len(self.errors),
        }


#: What each step of planning a Task does, and what fixes its failure.
STEPS = {
    "schedule": (
        "Computing the next run time",
        "Check the task's cron and time zone (or its tenant's).",
    ),
    "code": (
        "Finding the task's code",
        "Deploy the integration's code again, or disable or delete the task.",
    ),
    "kwargs": ("Checking the task's kwargs", "Edit the kwargs to fit the task."),
    "policies": (
        "Applying the catch-up and overlap policies",
        "Check the task's catch-up and overlap settings.",
    ),
}
#: A plan error is stored and shown whole up to this length.
MAX_ERROR_LENGTH = 2000
#: The largest value of a PositiveIntegerField (PostgreSQL integer); counters saturate.
MAX_COUNT = 2_147_483_647


def run_tick(now: dt.datetime, *, clock: Callable[[], dt.datetime] = timezone.now) -> TickResult:
    """Defer the runs of every Task due at ``now`` (the tick's time, not the clock's)."""
    started = clock()
    result = TickResult(now=now)
    with transaction.atomic():
        due = jobs.lock_due_tasks(now)
        runnable, advances = split_blocked(due, now, result)
        planned = plan_runs(runnable, now, advances, result)
        runs = jobs.defer_runs(planned)
        jobs.advance_tasks(list(advances.values()), now)
        record_tick(result, due, runs, started, clock())
    result.deferred = runs
    if due:
        logger.info("tick %s: %s", now.isoformat(), result.as_dict())
    return result


def fail_task(
    task: jobs.DueTask,
    step: str,
    exc: Exception,
    result: TickResult,
    advances: dict[int, jobs.Advance],
) -> None:
    """Record that ``task`` could not be planned at ``step``; the tick goes on without it.

    The Task keeps its ``next_run_at``: it stays due and is retried at every tick. That
    is cheap (planning one Task is bounded: lookups are cached, missed ticks are counted
    arithmetically), a fix (an edit, a deploy bringing its code back) takes effect at the
    next tick without touching the schedule, and the ticks it missed meanwhile then go
    through its catch-up policy like those of any outage. Pushing ``next_run_at`` on
    instead would drop those ticks silently and delay the fix's effect. The error is
    written on the Task (``plan_error``; ``plan_error_at`` keeps the tick it first came
    at) and logged only when it changes, so a lasting error costs one row of each tick's
    single UPDATE, not a log line per tick.
    """
    what, fix = STEPS[step]
    if isinstance(exc, ValidationError):
        detail = " ".join(exc.messages)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    message = f"{what} failed: {detail} {fix} Retried at every tick."
    if len(message) > MAX_ERROR_LENGTH:
        message = message[: MAX_ERROR_LENGTH - 1] + "…"
    result.errors[task.pk] = message
    advances[task.pk] = jobs.Advance(task.pk, task.next_run_at, error=message)
    if message != task.plan_error:
        logger.warning(
            "task %s (%s.%s) not scheduled: %s",
            task.pk,
            task.integration_type,
            task.name,
            message,
            exc_info=not isinstance(exc, ValidationError),  # a bug: keep the traceback
        )


def split_blocked(
    due: list[jobs.DueTask], now: dt.datetime, result: TickResult
) -> tuple[list[tuple[jobs.DueTask, str]], dict[int, jobs.Advance]]:
    """Every due Task moves on to its next tick; blocked ones (paused, tenant inactive,
    integration disabled) do nothing else, and their ticks are not misses. A Task that
    cannot be planned (its cron, zone, code or kwargs) is left to :func:`fail_task`.
    Returns the runnable Tasks with the procrastinate task each one runs."""
    advances: dict[int, jobs.Advance] = {}
    runnable = []
    for task in due:
        step = "schedule"
        try:
            advance = jobs.Advance(task.pk, next_fire(task.cron, now, task.zone))
            if not (task.paused or task.owner_blocked):
                step = "code"
                procrastinate_task = _procrastinate_task(task.integration_type, task.name)
                step = "kwargs"
                check_kwargs(task.integration_type, task.name, task.kwargs)
        except Exception as exc:
            fail_task(task, step, exc, result, advances)
            continue
        if task.plan_error:
            logger.info("task %s is scheduled again", task.pk)
        advances[task.pk] = advance
        if task.paused or task.owner_blocked:
            result.blocked += 1
        else:
            runnable.append((task, procrastinate_task))
    return runnable, advances


@lru_cache(maxsize=1024)
def _procrastinate_task(integration_type: str, name: str) -> str:
    """The procrastinate name of a task; ValidationError when its code is gone."""
    return registry.get_type(integration_type).get_task(name).procrastinate_name


def check_kwargs(integration_type: str, name: str, kwargs: object) -> None:
    """Raise ValidationError unless ``kwargs`` still fit the task's function."""
    if not isinstance(kwargs, dict):
        raise ValidationError(
            f'kwargs must be a JSON object, e.g. {{}} or {{"since_days": 7}}; '
            f"got {type(kwargs).__name__}."
        )
    error = _kwargs_error(integration_type, name, tuple(sorted(kwargs)))
    if error:
        raise ValidationError(error)


@lru_cache(maxsize=4096)
def _kwargs_error(integration_type: str, name: str, names: tuple[str, ...]) -> str:
    """Cached by argument names: a function's signature checks names, not values."""
    spec = registry.get_type(integration_type).get_task(name)
    try:
        spec.validate_kwargs(dict.fromkeys(names))
    except ValidationError as exc:
        return " ".join(exc.messages)
    return ""


def plan_runs(
    runnable: list[tuple[jobs.DueTask, str]],
    now: dt.datetime,
    advances: dict[int, jobs.Advance],
    result: TickResult,
) -> list[jobs.RunToDefer]:
    """Apply each Task's catch-up and overlap policies; never plan a tick twice.

    A Task whose policies raise is left to :func:`fail_task`; the others go on."""
    grace = dt.timedelta(seconds=settings.SCHEDULER_PERIOD)
    plans = {}
    for task, _ in runnable:
        try:
            plans[task.pk] = plan_catchup(
                cron=task.cron,
                zone=task.zone,
                next_run_at=task.next_run_at,
                now=now,
                policy=task.catchup,
                window=task.catchup_window,
                max_runs=task.catchup_max,
                grace=grace,
            )
        except Exception as exc:
            fail_task(task, "policies", exc, result, advances)
    runnable = [(task, name) for task, name in runnable if task.pk in plans]
    done = jobs.existing_ticks((pk, when) for pk, plan in plans.items() for when in plan.fires)
    watched = [t.pk for t, _ in runnable if t.overlap != "allow" and plans[t.pk].fires]
    active = jobs.active_runs(watched) if watched else jobs.ActiveRuns({}, {})
    planned = []
    for task, procrastinate_task in runnable:
        plan = plans[task.pk]
        fires = [when for when in plan.fires if (task.pk, when) not in done]
        try:
            fires, skipped = plan_overlap(
                fires,
                policy=task.overlap,
                queued=active.queued.get(task.pk, 0),
                running=active.running.get(task.pk, 0),
            )
            runs = [jobs.RunToDefer.of(task, procrastinate_task, when) for when in fires]
        except Exception as exc:
            fail_task(task, "policies", exc, result, advances)
            continue
        advance = advances[task.pk]
        advance.missed, advance.skipped = plan.missed, skipped
        advance.last_run_at = fires[-1] if fires else None
        result.missed += plan.missed
        result.skipped += skipped
        planned += runs
    result.due = len(advances)
    return planned


def record_tick(result, due, runs, started: dt.datetime, finished: dt.datetime) -> None:
    """The heartbeat health checks and admin read; old ones are pruned as we go."""
    retention = dt.timedelta(days=settings.SCHEDULER_TICK_RETENTION_DAYS)
    SchedulerTick.objects.filter(started_at__lt=started - retention).delete()
    SchedulerTick.objects.create(
        tick_time=result.now,
        started_at=started,
        finished_at=finished,
        due=len(due),
        deferred=len(runs),
        skipped=min(result.skipped, MAX_COUNT),
        missed=min(result.missed, MAX_COUNT),
        blocked=result.blocked,
        errors=len(result.errors),
    )
