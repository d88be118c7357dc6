"""Bounded run history: finished TaskRuns older than ``TASKRUN_RETENTION_DAYS`` are deleted.

The maintenance job (:mod:`scheduler.maintenance`) calls :func:`purge_task_runs` every
minute, then the audit app's own purge, sharing one :class:`Pacing`. A purge deletes in
batches of ``RETENTION_BATCH_SIZE`` rows, one short statement (its own transaction) each,
and starts no new batch once ``RETENTION_BUDGET_SECONDS`` have passed. It ends when a tick
waits (:func:`tick_waiting`) and pauses while one runs elsewhere (:func:`tick_running`). So
it never holds locks for long, never keeps a worker from its next tick nor runs beside a
tick for more than the one batch in flight, and what it leaves goes at the next run.
Interrupted anywhere, it loses nothing it should keep: every committed batch deleted only
rows past their retention, and a batch cut short rolls back whole.

Like :mod:`scheduler.fairness`, this module reads ``procrastinate_jobs`` outside
:mod:`scheduler.jobs`: whether a run's job is gone (in the purge's statement) and whether a
tick waits or runs (:func:`tick_waiting`, :func:`tick_running`), each through one of
procrastinate's indexes.

A run is deleted only when all of these hold, so that nothing can miss it:

- it is finished (succeeded, failed or cancelled): a ``todo`` or ``doing`` run is what the
  overlap policy counts and what the trigger on ``procrastinate_jobs`` updates;
- it was enqueued before the cutoff (``now`` minus the retention; index
  ``taskrun_enqueued_idx`` makes the oldest batch cheap to find);
- its procrastinate job is gone: a job still there (until ``JOB_RETENTION_HOURS`` after it
  ended) can be retried from admin, and the trigger and the workers' middleware would then
  look for its run. System check ``scheduler.E003`` keeps the TaskRun retention at least as
  long as the jobs', so such runs wait briefly, not in every batch's way;
- its ``scheduled_for`` is before its Task's ``next_run_at`` (or the Task has none). The
  tick's exactly-once check (``tick_store.lock_due_tasks``) only ever looks up fire times
  at or after the Task's ``next_run_at``: the catch-up policies plan fires in
  ``[next_run_at, now]`` (``policies.plan_catchup``, the window only narrows it), and
  ``next_run_at`` never moves back before a recorded fire (the tick advances it past the
  fires it deferred, in the same transaction; a schedule edit sets it to the next fire
  after the present). A run before it can never be looked up again, whatever a Task's
  ``catchup_window``: so no retention is too short for the planner, and the minimum of one
  day (``scheduler.E002``) is for people reading history, not for exactly-once.

Time partitions would make a purge a ``DROP`` of a partition, but need the unique
``(task, scheduled_for)`` constraint to include the partition key and a partition per day
created ahead; batches of a few thousand rows keep up with 100,000 runs a minute (see
``bench/retention.py``), so plain deletes it is.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.db import connection
from django.utils import timezone

from audit.retention import delete_old_entries, retention_days_problem
from scheduler.queues import SCHEDULER_QUEUE

#: A batch larger than this would hold its row locks, and the worker, too long.
MAX_BATCH_SIZE = 50_000
#: A purge longer than the maintenance job's period would overlap the next one.
MAX_BUDGET_SECONDS = 60
#: The shortest retention accepted: the dashboard shows the last day's runs.
#: Seconds between two looks while a purge waits for a tick running elsewhere.
PAUSE_SECONDS = 0.05


@dataclass(frozen=True)
class PurgeResult:
    """What one purge did: rows deleted, statements run, and whether it reached the end
    (False: it stopped for its budget or a waiting tick, and the next run goes on)."""

    deleted: int = 0
    batches: int = 0
    complete: bool = True


def never() -> bool:
    """Nothing to make way for."""
    return False


@dataclass(frozen=True)
class Pacing:
    """How much a purge may do: rows per statement, until when, and what it makes way for.

    Before each batch, ``stop_if()`` says whether work waits for the worker running the
    purge (a tick: the purge ends, freeing the worker), and ``pause_while()`` whether work
    runs elsewhere that the purge must not slow (a tick on another worker: the purge sleeps
    ``PAUSE_SECONDS`` and looks again). ``deadline`` (a value of ``clock``) ends pauses, and
    is looked at after each batch, so every purge runs at least one batch when nothing is in
    the way: each table makes progress even when another one used the budget.
    """

    batch_size: int
    deadline: float
    clock: Callable[[], float] = time.monotonic
    stop_if: Callable[[], bool] = field(default=never)
    pause_while: Callable[[], bool] = field(default=never)
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(
        cls,
        *,
        clock: Callable[[], float] = time.monotonic,
        stop_if: Callable[[], bool] = never,
        pause_while: Callable[[], bool] = never,
    ) -> Pacing:
        """``RETENTION_BATCH_SIZE`` rows per statement for ``RETENTION_BUDGET_SECONDS``."""
        return cls(
            batch_size=settings.RETENTION_BATCH_SIZE,
            deadline=clock() + settings.RETENTION_BUDGET_SECONDS,
            clock=clock,
            stop_if=stop_if,
            pause_while=pause_while,
        )

    def clear_way(self) -> bool:
        """Whether a batch may start now: waits while ``pause_while()`` holds (until the
        deadline); False when the purge must end instead."""
        while True:
            if self.stop_if():
                return False
            if not self.pause_while():
                return True
            if self.clock() >= self.deadline:
                return False
            self.sleep(PAUSE_SECONDS)


def purge_in_batches(delete_batch: Callable[[int], int], pacing: Pacing) -> PurgeResult:
    """Call ``delete_batch(limit)`` (rows deleted, one statement) until a batch comes back
    short (nothing left), the deadline has passed, or ``pacing`` says to make way."""
    deleted = batches = 0
    while True:
        if not pacing.clear_way():
            return PurgeResult(deleted, batches, complete=False)
        count = delete_batch(pacing.batch_size)
        deleted += count
        batches += 1
        if count < pacing.batch_size:
            return PurgeResult(deleted, batches, complete=True)
        if pacing.clock() >= pacing.deadline:
            return PurgeResult(deleted, batches, complete=False)


#: The maintenance job's name (:mod:`scheduler.maintenance`): the one job on queue
#: ``scheduler`` that a purge does not make way for, since it is the purge.
MAINTENANCE_TASK = "metronome.maintenance"

# Each reads a partial index of procrastinate's, so it stays cheap however many jobs the
# table holds. Waiting: procrastinate_jobs_priority_idx_v1, from the top (the order workers
# fetch in) down to priority 0: tenant jobs have negative priorities (scheduler.fairness),
# the maintenance job -1, ticks and their helpers procrastinate's default, 0. (Written as
# ORDER BY ... LIMIT 1, not EXISTS, which would drop the order and let the planner scan the
# table.) Running: the index of running jobs, idx_procrastinate_jobs_worker_not_null.
_SCHEDULER_WAITING_SQL = """
    SELECT 1 FROM procrastinate_jobs
     WHERE status = 'todo' AND priority >= 0 AND queue_name = %(queue)s
       AND (scheduled_at IS NULL OR scheduled_at <= now())
     ORDER BY priority DESC, id
     LIMIT 1
"""
_SCHEDULER_RUNNING_SQL = """
    SELECT 1 FROM procrastinate_jobs
     WHERE status = 'doing' AND worker_id IS NOT NULL
       AND queue_name = %(queue)s AND task_name <> %(maintenance)s
     LIMIT 1
"""


def _found(query: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(query, {"queue": SCHEDULER_QUEUE, "maintenance": MAINTENANCE_TASK})
        return cursor.fetchone() is not None


def tick_waiting() -> bool:
    """Whether a tick (or a helper of one) waits for a worker: the maintenance job's purge
    then ends (its ``stop_if``), so that a worker they share takes the tick next. One
    index lookup, well under a millisecond."""
    return _found(_SCHEDULER_WAITING_SQL)


def tick_running() -> bool:
    """Whether a tick (or a helper of one) runs on a worker: the maintenance job's purge
    pauses meanwhile (its ``pause_while``), so that the tick does not share the database
    with it. One index lookup."""
    return _found(_SCHEDULER_RUNNING_SQL)


# One statement per batch. The rows are locked as they are chosen (SKIP LOCKED: a row the
# trigger or a worker is updating right now is left for the next run), so each is still
# finished when it is deleted; the Task row is read, not locked. Rows are deleted by their
# physical address (ctid), which a locked row keeps: no second index lookup per row, and
# the plan stays an index scan of the oldest runs however large the table.
_DELETE_RUNS_SQL = """
    DELETE FROM scheduler_taskrun
     WHERE ctid = ANY(ARRAY(
        SELECT r.ctid
          FROM scheduler_taskrun r
          JOIN scheduler_task t ON t.id = r.task_id
         WHERE r.enqueued_at < %(cutoff)s
           AND r.status IN ('succeeded', 'failed', 'cancelled')
           AND (t.next_run_at IS NULL OR r.scheduled_for < t.next_run_at)
           AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = r.job_id)
         ORDER BY r.enqueued_at
         LIMIT %(limit)s
           FOR UPDATE OF r SKIP LOCKED))
"""


def purge_task_runs(
    now: dt.datetime | None = None,
    *,
    retention_days: int | None = None,
    pacing: Pacing | None = None,
) -> PurgeResult:
    """Delete finished TaskRuns enqueued more than ``retention_days`` (default
    ``TASKRUN_RETENTION_DAYS``; 0 keeps them forever) before ``now``, in batches."""
    days = settings.TASKRUN_RETENTION_DAYS if retention_days is None else retention_days
    if days <= 0:
        return PurgeResult()
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)

    def delete_batch(limit: int) -> int:
        with connection.cursor() as cursor:
            cursor.execute(_DELETE_RUNS_SQL, {"cutoff": cutoff, "limit": limit})
            return cursor.rowcount

    return purge_in_batches(delete_batch, pacing or Pacing.from_settings())


def purge_audit_entries(
    now: dt.datetime | None = None,
    *,
    retention_days: int | None = None,
    pacing: Pacing | None = None,
) -> PurgeResult:
    """Delete audit entries created more than ``retention_days`` (default
    ``AUDIT_RETENTION_DAYS``; 0 keeps them forever) before ``now``, in batches
    (:func:`audit.retention.delete_old_entries`), paced like the TaskRun purge."""
    days = settings.AUDIT_RETENTION_DAYS if retention_days is None else retention_days
    if days <= 0:
        return PurgeResult()
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    return purge_in_batches(
        lambda limit: delete_old_entries(cutoff, limit), pacing or Pacing.from_settings()
    )


# ----------------------------------------------------------------------------- checks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def whole_number_problem(name: str, value: object, minimum: int, maximum: int) -> str:
    """Why ``value`` is not a whole number in ``[minimum, maximum]``; "" when it is."""
    if _is_int(value) and minimum <= value <= maximum:  # type: ignore[operator]
        return ""
    return f"{name} is {value!r}; it must be a whole number from {minimum} to {maximum:,}."


def _selected(app_configs: Sequence[AppConfig] | None, label: str) -> bool:
    return app_configs is None or any(c.label == label for c in app_configs)


@register()
def check_retention_settings(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``scheduler.E002``-``E004``: the TaskRun retention and the purge's pacing."""
    if not _selected(app_configs, "scheduler"):
        return []
    messages: list[CheckMessage] = []
    days = getattr(settings, "TASKRUN_RETENTION_DAYS", None)
    problem = retention_days_problem("TASKRUN_RETENTION_DAYS", days)
    if problem:
        messages.append(
            Error(
                problem,
                hint="Set TASKRUN_RETENTION_DAYS to the days of run history to keep, e.g. "
                "TASKRUN_RETENTION_DAYS=90, or 0 to keep every run.",
                id="scheduler.E002",
            )
        )
    elif days:
        job_hours = settings.JOB_RETENTION_HOURS
        if isinstance(job_hours, int) and days * 24 < job_hours:
            messages.append(
                Error(
                    f"TASKRUN_RETENTION_DAYS={days} keeps runs for less time than "
                    f"JOB_RETENTION_HOURS={job_hours} keeps their jobs; a run is kept while "
                    "its job exists (it can still be retried), so the shorter retention "
                    "would not hold.",
                    hint=f"Set TASKRUN_RETENTION_DAYS to {-(-job_hours // 24)} or more, or "
                    f"JOB_RETENTION_HOURS to {days * 24} or less.",
                    id="scheduler.E003",
                )
            )
    for name, minimum, maximum, example in (
        ("RETENTION_BATCH_SIZE", 1, MAX_BATCH_SIZE, "2000"),
        ("RETENTION_BUDGET_SECONDS", 1, MAX_BUDGET_SECONDS, "10"),
    ):
        problem = whole_number_problem(name, getattr(settings, name, None), minimum, maximum)
        if problem:
            messages.append(
                Error(problem, hint=f"e.g. {name}={example} (the default).", id="scheduler.E004")
            )
    return messages
