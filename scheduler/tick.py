"""One scheduler tick: turn every due Task into jobs on its tenant's queue.

The tick is one transaction on Django's connection: TaskRun rows, procrastinate job
rows, ``next_run_at`` updates and the tick's own record commit together or not at all
(jobs are inserted through a JobManager on Django's connection, not the worker's pool).
Due Tasks are locked ``FOR UPDATE SKIP LOCKED``, so concurrent schedulers never take
the same Task; a (task, scheduled_for) pair that already has a run is never deferred
again, and a unique constraint backs that. The number of queries does not depend on
the number of due Tasks.
"""

from __future__ import annotations

import datetime as dt
import logging
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
    unknown: list[int] = field(default_factory=list)  # Task ids whose code is gone

    def as_dict(self) -> dict[str, object]:
        return {
            "now": self.now.isoformat(),
            "due": self.due,
            "deferred": len(self.deferred),
            "skipped": self.skipped,
            "missed": self.missed,
            "blocked": self.blocked,
            "unknown": self.unknown,
        }


def run_tick(now: dt.datetime, *, clock=timezone.now) -> TickResult:
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


def split_blocked(
    due: list[jobs.DueTask], now: dt.datetime, result: TickResult
) -> tuple[list[tuple[jobs.DueTask, str]], dict[int, jobs.Advance]]:
    """Every due Task moves on to its next tick; blocked ones (paused, tenant inactive,
    integration disabled, code gone) do nothing else, and their ticks are not misses.
    Returns the runnable Tasks with the procrastinate task each one runs."""
    advances = {
        task.pk: jobs.Advance(task.pk, next_fire(task.cron, now, task.zone)) for task in due
    }
    runnable = []
    for task in due:
        if task.paused or task.owner_blocked:
            result.blocked += 1
            continue
        procrastinate_task = _procrastinate_task(task.integration_type, task.name)
        if procrastinate_task is None:
            result.unknown.append(task.pk)
        else:
            runnable.append((task, procrastinate_task))
    return runnable, advances


@lru_cache(maxsize=1024)
def _procrastinate_task(integration_type: str, name: str) -> str | None:
    try:
        return registry.get_type(integration_type).get_task(name).procrastinate_name
    except ValidationError as exc:  # the type or task was removed from the code
        logger.warning("%s.%s not run: %s", integration_type, name, " ".join(exc.messages))
        return None


def plan_runs(
    runnable: list[tuple[jobs.DueTask, str]],
    now: dt.datetime,
    advances: dict[int, jobs.Advance],
    result: TickResult,
) -> list[jobs.RunToDefer]:
    """Apply each Task's catch-up and overlap policies; never plan a tick twice."""
    grace = dt.timedelta(seconds=settings.SCHEDULER_PERIOD)
    tasks = [task for task, _ in runnable]
    plans = {
        task.pk: plan_catchup(
            cron=task.cron,
            zone=task.zone,
            next_run_at=task.next_run_at,
            now=now,
            policy=task.catchup,
            window=task.catchup_window,
            max_runs=task.catchup_max,
            grace=grace,
        )
        for task in tasks
    }
    done = jobs.existing_ticks((pk, when) for pk, plan in plans.items() for when in plan.fires)
    watched = [task.pk for task in tasks if task.overlap != "allow" and plans[task.pk].fires]
    active = jobs.active_runs(watched) if watched else jobs.ActiveRuns({}, {})
    planned = []
    for task, procrastinate_task in runnable:
        plan = plans[task.pk]
        fires = [when for when in plan.fires if (task.pk, when) not in done]
        fires, skipped = plan_overlap(
            fires,
            policy=task.overlap,
            queued=active.queued.get(task.pk, 0),
            running=active.running.get(task.pk, 0),
        )
        advance = advances[task.pk]
        advance.missed, advance.skipped = plan.missed, skipped
        advance.last_run_at = fires[-1] if fires else None
        result.missed += plan.missed
        result.skipped += skipped
        planned += [jobs.RunToDefer.of(task, procrastinate_task, when) for when in fires]
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
        skipped=result.skipped,
        missed=result.missed,
        blocked=result.blocked,
    )
