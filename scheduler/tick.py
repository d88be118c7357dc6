"""One scheduler tick: turn every due Task into jobs on its tenant's queue.

A tick reads, then plans, then writes, in one transaction on Django's connection:

- **read**: the due Tasks, locked ``FOR UPDATE SKIP LOCKED`` so concurrent schedulers
  never take the same Task, and what code each runs; then, for the fires their catch-up
  policies chose, the (task, fire) pairs that already have a run and the runs still queued
  or running (:mod:`scheduler.tick_store`, :mod:`scheduler.run_records`);
- **plan**: :mod:`scheduler.planner`, pure functions of those values;
- **write**: the runs and their jobs, the end of runs whose job vanished, every due Task's
  ``next_run_at`` and counters, and the tick's own record.

Runs, job rows and Task updates commit together or not at all (jobs are inserted through a
JobManager on Django's connection, not the worker's pool). A (task, scheduled_for) pair
that already has a run is never deferred again, and a unique constraint backs that. The
number of queries does not depend on the number of due Tasks.

One Task never stops the tick for the others: whatever goes wrong while planning a Task
(its cron or zone, its code or kwargs, its policies) is written on that Task
(``plan_error``), counted in the tick's record, logged once per change, and the tick goes
on (see :func:`scheduler.planner.failure`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from integrations.base import registry
from scheduler import planner, run_records, tick_store

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


def run_tick(now: dt.datetime, *, clock: Callable[[], dt.datetime] = timezone.now) -> TickResult:
    """Defer the runs of every Task due at ``now`` (the tick's time, not the clock's)."""
    started = clock()
    grace = dt.timedelta(seconds=settings.SCHEDULER_PERIOD)
    with transaction.atomic():
        # Read.
        due = tick_store.lock_due_tasks(now)
        code = {task.pk: task_code(task) for task in due if not task.blocked}
        drafted = planner.draft(due, now=now, grace=grace, code=code)
        done = run_records.existing_ticks(drafted.candidate_pairs())
        active = run_records.active_runs(drafted.watched_task_ids())
        # Plan.
        plan = planner.plan(drafted, done=done, queued=active.queued, running=active.running)
        log_plan(due, plan)
        # Write.
        run_ids = run_records.defer_runs(plan.runs)
        run_records.settle_stale_runs(active.stale)
        tick_store.advance_tasks(plan.advances, now)
        tick_store.record_tick(now, plan, len(run_ids), started, clock())
    result = TickResult(
        now=now,
        due=plan.due,
        deferred=run_ids,
        skipped=plan.skipped,
        missed=plan.missed,
        blocked=plan.blocked,
        errors=plan.errors,
    )
    if due:
        logger.info("tick %s: %s", now.isoformat(), result.as_dict())
    return result


def task_code(task: planner.DueTask) -> planner.TaskCode:
    """The procrastinate task a due Task runs, or why it cannot run (code gone, or
    kwargs that no longer fit its function). Registry lookups, cached per process."""
    step = "code"
    try:
        procrastinate_task = _procrastinate_task(task.integration_type, task.name)
        step = "kwargs"
        check_kwargs(task.integration_type, task.name, task.kwargs)
    except Exception as exc:
        return planner.TaskCode(step=step, error=exc)
    return planner.TaskCode(procrastinate_task=procrastinate_task)


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


def log_plan(due: Sequence[planner.DueTask], plan: planner.TickPlan) -> None:
    """Log each plan error when it differs from the one stored on the Task (a lasting
    error is logged once, not at every tick), and each Task planned again after one."""
    for task in due:
        failure = plan.failures.get(task.pk)
        if failure is None:
            if task.plan_error:
                logger.info("task %s is scheduled again", task.pk)
        elif failure.message != task.plan_error:
            logger.warning(
                "task %s (%s.%s) not scheduled: %s",
                task.pk,
                task.integration_type,
                task.name,
                failure.message,
                # A bug keeps its traceback; a ValidationError says all it has to say.
                exc_info=None if isinstance(failure.error, ValidationError) else failure.error,
            )
