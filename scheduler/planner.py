"""What one tick does, computed from plain values: no database, no clock, no logging.

The tick (:mod:`scheduler.tick`) reads, then plans, then writes. Planning is this module,
in two pure steps:

1. :func:`draft` takes the due Tasks (and what code each one runs) and computes, per Task,
   its next run time and the fires its catch-up policy would run, all in
   ``[next_run_at, now]``; blocked Tasks only move on, and a Task that cannot be planned
   gets its error.
2. :func:`plan` takes the draft and what was read of the Tasks' runs (the (task, fire)
   pairs that already have a run, runs queued or running per Task) and applies the
   overlap policy: the :class:`TickPlan` lists the runs to defer, the update of every due
   Task and the tick's counts.

Both take frozen values and return new ones; the inputs are never changed. One Task that
cannot be planned (its cron or zone, its code or kwargs, its policies) gets a
:class:`PlanFailure` and keeps its ``next_run_at``; the others go on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import ValidationError

from scheduler.cron import next_fire
from scheduler.policies import CatchupPlan, plan_catchup, plan_overlap

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


@dataclass(frozen=True)
class DueTask:
    """The columns of a due Task that a tick reads; plain values, no ORM objects (a tick
    over 10,000 Tasks would spend most of its time building them)."""

    pk: int
    integration_id: int
    tenant_id: int
    name: str
    cron: str
    zone: str  # the Task's time zone, else its tenant's
    kwargs: dict[str, Any]
    next_run_at: dt.datetime
    catchup: str
    catchup_window: dt.timedelta
    catchup_max: int
    overlap: str
    max_attempts: int
    retry_backoff: dt.timedelta
    paused: bool  # the Task, at the tick's time
    owner_blocked: bool  # tenant inactive or paused, or integration disabled
    integration_type: str
    plan_error: str  # why the last tick could not plan it ("" when it could)

    @property
    def blocked(self) -> bool:
        """Paused, or its tenant or integration is: it moves on and runs nothing."""
        return self.paused or self.owner_blocked

    def retry_policy(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff_seconds": self.retry_backoff.total_seconds(),
        }


class RunSource(Protocol):
    """What a run is made from: a :class:`DueTask`, or a Task row for a manual run."""

    @property
    def pk(self) -> Any: ...
    @property
    def tenant_id(self) -> Any: ...
    @property
    def integration_id(self) -> Any: ...
    @property
    def kwargs(self) -> Any: ...
    def retry_policy(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class RunToDefer:
    """One run to insert: its job's arguments and its TaskRun's columns."""

    task_id: int
    tenant_id: int
    integration_id: int
    procrastinate_task: str
    kwargs: dict[str, Any]
    retry: dict[str, Any]
    scheduled_for: dt.datetime
    manual: bool = False

    @classmethod
    def of(
        cls, task: RunSource, procrastinate_task: str, when: dt.datetime, manual: bool = False
    ) -> RunToDefer:
        return cls(task.pk, task.tenant_id, task.integration_id, procrastinate_task,
                   task.kwargs, task.retry_policy(), when, manual)  # fmt: skip


@dataclass(frozen=True)
class TaskCode:
    """What a due Task runs, as the tick's read step found it.

    ``procrastinate_task`` is set when the Task's code exists and its kwargs fit it;
    otherwise ``step`` (``"code"`` or ``"kwargs"``) and ``error`` say what failed.
    """

    procrastinate_task: str = ""
    step: str = ""
    error: Exception | None = None


@dataclass(frozen=True)
class Advance:
    """The scheduler's columns of one due Task after the tick."""

    task_id: int
    next_run_at: dt.datetime
    last_run_at: dt.datetime | None = None
    missed: int = 0
    skipped: int = 0
    error: str = ""  # why the Task could not be planned; "" clears a previous error


@dataclass(frozen=True)
class PlanFailure:
    """A Task that could not be planned: at which step, the exception and the message
    stored on the Task."""

    task: DueTask
    step: str
    error: Exception
    message: str


@dataclass(frozen=True)
class Candidate:
    """A runnable Task with its next run time and the fires its catch-up policy chose."""

    task: DueTask
    procrastinate_task: str
    next_run_at: dt.datetime
    catchup: CatchupPlan


@dataclass(frozen=True)
class Draft:
    """The first step of planning: what is known before existing runs are read."""

    tasks: tuple[DueTask, ...]  # every due Task, in the order read
    candidates: tuple[Candidate, ...]
    moved_on: Mapping[int, dt.datetime]  # blocked Task id -> its next run time
    failures: Mapping[int, PlanFailure]


@dataclass(frozen=True)
class TickPlan:
    """Everything a tick writes, and its counts."""

    runs: tuple[RunToDefer, ...]  # oldest fire first within each Task, Tasks in due order
    advances: tuple[Advance, ...]  # one per due Task, in due order
    failures: Mapping[int, PlanFailure]  # Task id -> why it was not planned
    due: int
    skipped: int
    missed: int
    blocked: int

    @property
    def errors(self) -> dict[int, str]:
        """Task id -> the message stored on it."""
        return {pk: failure.message for pk, failure in self.failures.items()}


def failure(task: DueTask, step: str, exc: Exception) -> PlanFailure:
    """The failure of ``task`` at ``step``: what failed, why, and what fixes it.

    The Task keeps its ``next_run_at``: it stays due and is retried at every tick. That
    is cheap (planning one Task is bounded: lookups are cached, missed ticks are counted
    arithmetically), a fix (an edit, a deploy bringing its code back) takes effect at the
    next tick without touching the schedule, and the ticks it missed meanwhile then go
    through its catch-up policy like those of any outage. Pushing ``next_run_at`` on
    instead would drop those ticks silently and delay the fix's effect.
    """
    what, fix = STEPS[step]
    if isinstance(exc, ValidationError):
        detail = " ".join(exc.messages)
    else:
        detail = f"{type(exc).__name__}: {exc}"
    message = f"{what} failed: {detail} {fix} Retried at every tick."
    if len(message) > MAX_ERROR_LENGTH:
        message = message[: MAX_ERROR_LENGTH - 1] + "…"
    return PlanFailure(task, step, exc, message)


def draft(
    tasks: Sequence[DueTask],
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    code: Mapping[int, TaskCode],
) -> Draft:
    """Step one: next run times, blocked Tasks, and each runnable Task's catch-up fires.

    ``grace`` is the scheduler's period: a fire that recent is on time, older ones were
    missed. ``code`` holds what each Task that is not blocked runs.
    """
    candidates: list[Candidate] = []
    moved_on: dict[int, dt.datetime] = {}
    failures: dict[int, PlanFailure] = {}
    for task in tasks:
        try:
            following = next_fire(task.cron, now, task.zone)
        except Exception as exc:
            failures[task.pk] = failure(task, "schedule", exc)
            continue
        if task.blocked:
            moved_on[task.pk] = following
            continue
        found = code.get(task.pk, TaskCode())
        if found.error is not None or not found.procrastinate_task:
            error = found.error or LookupError("the task's code was not looked up")
            failures[task.pk] = failure(task, found.step or "code", error)
            continue
        try:
            catchup = plan_catchup(
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
            failures[task.pk] = failure(task, "policies", exc)
            continue
        candidates.append(Candidate(task, found.procrastinate_task, following, catchup))
    return Draft(tuple(tasks), tuple(candidates), moved_on, failures)


def plan(
    drafted: Draft,
    *,
    done: Iterable[tuple[int, dt.datetime]],
    queued: Mapping[int, int],
    running: Mapping[int, int],
) -> TickPlan:
    """Step two: drop fires that already have a run, apply each Task's overlap policy.

    ``done`` holds the (task, fire) pairs that already have a run; ``queued`` and
    ``running`` count, per Task, its runs whose job waits or runs.
    """
    done = frozenset(done)
    failures = dict(drafted.failures)
    planned: dict[int, tuple[Advance, tuple[RunToDefer, ...]]] = {}
    for candidate in drafted.candidates:
        task = candidate.task
        fires = [when for when in candidate.catchup.fires if (task.pk, when) not in done]
        try:
            chosen, skipped = plan_overlap(
                fires,
                policy=task.overlap,
                queued=queued.get(task.pk, 0),
                running=running.get(task.pk, 0),
            )
            runs = tuple(RunToDefer.of(task, candidate.procrastinate_task, when) for when in chosen)
        except Exception as exc:
            failures[task.pk] = failure(task, "policies", exc)
            continue
        advance = Advance(
            task.pk,
            candidate.next_run_at,
            last_run_at=chosen[-1] if chosen else None,
            missed=candidate.catchup.missed,
            skipped=skipped,
        )
        planned[task.pk] = (advance, runs)
    advances: list[Advance] = []
    runs_to_defer: list[RunToDefer] = []
    for task in drafted.tasks:
        if task.pk in failures:
            advances.append(Advance(task.pk, task.next_run_at, error=failures[task.pk].message))
        elif task.pk in drafted.moved_on:
            advances.append(Advance(task.pk, drafted.moved_on[task.pk]))
        else:
            advance, runs = planned[task.pk]
            advances.append(advance)
            runs_to_defer.extend(runs)
    counted = [advance for advance in advances if advance.task_id in planned]
    return TickPlan(
        runs=tuple(runs_to_defer),
        advances=tuple(advances),
        failures=failures,
        due=len(drafted.tasks),
        skipped=sum(advance.skipped for advance in counted),
        missed=sum(advance.missed for advance in counted),
        blocked=len(drafted.moved_on),
    )
