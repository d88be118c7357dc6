"""One scheduler tick: turn every due Task into jobs on its tenant's queue.

A tick takes the due Tasks in chunks (setting ``SCHEDULER_CHUNK_SIZE``); for each chunk it
reads, then plans, then writes, in one transaction on Django's connection:

- **read**: the due Tasks, locked ``FOR UPDATE SKIP LOCKED`` so concurrent schedulers
  never take the same Task, with the fires since their ``next_run_at`` that already have a
  run and their runs still queued or running, in one statement
  (:mod:`scheduler.tick_store`); and what code each runs;
- **plan**: :mod:`scheduler.planner`, pure functions of those values;
- **write**: the runs and their jobs, the end of runs whose job vanished, and every due
  Task's ``next_run_at`` and counters.

Then it records itself (``SchedulerTick``). A chunk's runs, job rows and Task updates
commit together or not at all (jobs are inserted on Django's connection, not the worker's
pool), and the first jobs of a herd start while later chunks are still being planned. A
(task, scheduled_for) pair that already has a run is never deferred again, and a unique
constraint backs that. The number of queries per chunk does not depend on its size; two
schedulers split a herd, each taking chunks the other has not locked.

One Task never stops the tick for the others: whatever goes wrong while planning a Task
(its cron or zone, its code or kwargs, its policies) is written on that Task
(``plan_error``), counted in the tick's record, logged once per change, and the tick goes
on (see :func:`scheduler.planner.failure`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
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
    chunks: int = 0
    #: Tasks this tick planned that are still due (those that could not be planned): later
    #: chunks do not take them again.
    still_due: set[int] = field(default_factory=set)

    def add(self, plan: planner.TickPlan, run_ids: Sequence[int]) -> None:
        """Count one committed chunk."""
        self.still_due.update(a.task_id for a in plan.advances if a.next_run_at <= self.now)
        self.due += plan.due
        self.deferred.extend(run_ids)
        self.skipped += plan.skipped
        self.missed += plan.missed
        self.blocked += plan.blocked
        self.errors.update(plan.errors)
        self.chunks += 1

    def merge(self, other: TickResult) -> None:
        """Add what another thread of the same tick did."""
        self.due += other.due
        self.deferred.extend(other.deferred)
        self.skipped += other.skipped
        self.missed += other.missed
        self.blocked += other.blocked
        self.errors.update(other.errors)
        self.chunks += other.chunks
        self.still_due.update(other.still_due)

    def as_dict(self) -> dict[str, object]:
        return {
            "now": self.now.isoformat(),
            "due": self.due,
            "deferred": len(self.deferred),
            "skipped": self.skipped,
            "missed": self.missed,
            "blocked": self.blocked,
            "errors": len(self.errors),
            "chunks": self.chunks,
        }


def run_tick(
    now: dt.datetime,
    *,
    clock: Callable[[], dt.datetime] = timezone.now,
    chunk_size: int | None = None,
    on_full_chunk: Callable[[], object] | None = None,
    threads: int | None = None,
) -> TickResult:
    """Defer the runs of every Task due at ``now`` (the tick's time, not the clock's), in
    chunks of ``chunk_size`` Tasks (setting ``SCHEDULER_CHUNK_SIZE``), each committed on
    its own; then record the tick.

    When the first chunk is full (a herd), ``on_full_chunk`` is called (other schedulers
    may help); when the second is full too, ``threads`` threads (setting
    ``SCHEDULER_TICK_THREADS``), each on a database connection of its own, take the
    remaining chunks: while one waits for PostgreSQL another plans. ``SKIP LOCKED``
    splits the chunks between them as between scheduler processes."""
    size = chunk_size or settings.SCHEDULER_CHUNK_SIZE
    started = clock()
    result = TickResult(now=now)
    if run_chunk(now, size, result) == size:
        if on_full_chunk is not None:
            on_full_chunk()
        # Threads (and their connections) only for a herd of more than two chunks.
        if run_chunk(now, size, result) == size:
            drain_in_threads(now, size, result, threads or settings.SCHEDULER_TICK_THREADS)
    with transaction.atomic():
        tick_store.record_tick(result, started, clock())
    if result.due:
        logger.info("tick %s: %s", now.isoformat(), result.as_dict())
    return result


def drain(now: dt.datetime, size: int, result: TickResult) -> None:
    """Run chunks until one is not full (nothing due is left that no one else holds)."""
    while run_chunk(now, size, result) == size:
        pass


def drain_in_threads(now: dt.datetime, size: int, result: TickResult, threads: int) -> None:
    """:func:`drain` in this thread and ``threads - 1`` more, adding what they did to
    ``result``; the first error of a thread is raised once all have stopped (the chunk it
    hit rolled back; its Tasks stay due for the next tick)."""
    helpers = [TickResult(now=now, still_due=result.still_due) for _ in range(threads - 1)]
    errors: list[BaseException] = []

    def work(part: TickResult) -> None:
        try:
            drain(now, size, part)
        except BaseException as exc:  # raised in the calling thread below
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    others = [threading.Thread(target=work, args=(part,), daemon=True) for part in helpers]
    for thread in others:
        thread.start()
    try:
        drain(now, size, result)
    finally:
        for thread in others:
            thread.join()
        for part in helpers:
            result.merge(part)
    if errors:
        raise errors[0]


def run_chunk(now: dt.datetime, size: int, result: TickResult) -> int:
    """Plan and write up to ``size`` due Tasks in one transaction, adding them to
    ``result``; how many due Tasks it took (fewer than ``size``: none is left).

    Exactly once per chunk: its runs, their jobs and its Tasks' ``next_run_at`` commit
    together or not at all, so a scheduler killed in the middle of a herd leaves the
    Tasks of unfinished chunks due, for the next tick, and none deferred twice. The commit
    does not wait for its WAL flush (see :func:`scheduler.tick_store.commit_without_flush_wait`)."""
    grace = dt.timedelta(seconds=settings.SCHEDULER_PERIOD)
    own_transaction = not connection.in_atomic_block
    with transaction.atomic():
        if own_transaction:  # a caller's transaction commits as the caller chose
            tick_store.commit_without_flush_wait()
        # Read.
        batch = tick_store.lock_due_tasks(now, size, passed=list(result.still_due))
        if not batch.tasks:
            return 0
        code = {task.pk: task_code(task) for task in batch.tasks if not task.blocked}
        # Plan.
        drafted = planner.draft(batch.tasks, now=now, grace=grace, code=code)
        active = batch.active
        plan = planner.plan(drafted, done=batch.done, queued=active.queued, running=active.running)
        log_plan(batch.tasks, plan)
        # Write. The jobs last: placing them locks their tenants' fair-share rows until
        # the commit, and a concurrent scheduler's chunk waits for those.
        tick_store.advance_tasks(plan.advances, now)
        run_records.settle_stale_runs(active.stale)
        run_ids = run_records.defer_runs(plan.runs)
    result.add(plan, run_ids)
    return len(batch.tasks)


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
