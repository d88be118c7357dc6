"""Operations on Tasks from admin or the shell: run now, cancel pending runs."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from scheduler import jobs, run_records
from scheduler.models import Task, TaskRun
from scheduler.planner import RunToDefer
from scheduler.policies import plan_overlap


def run_now(task: Task, now: dt.datetime | None = None) -> TaskRun:
    """Defer a manual run at once, if the Task's overlap policy allows it.

    Raises ValidationError (saying why) when a run is already queued or running and the
    policy forbids another, or when the task cannot run at all.
    """
    now = now or timezone.now()
    with transaction.atomic():
        task = (
            Task.objects.select_for_update(of=("self",))
            .select_related("integration", "tenant")
            .get(pk=task.pk)
        )
        if not task.tenant.is_active:
            raise ValidationError(f"Tenant '{task.tenant}' is inactive; activate it first.")
        procrastinate_task = task.integration.type.get_task(task.name).procrastinate_name
        active = run_records.active_runs([task.pk])
        queued, running = active.queued.get(task.pk, 0), active.running.get(task.pk, 0)
        chosen, _ = plan_overlap([now], policy=task.overlap, queued=queued, running=running)
        if not chosen:
            raise ValidationError(
                f"Task {task.pk} already has a run {'queued' if queued else 'running'} and its "
                f"overlap policy is '{task.overlap}'; wait for it, or set overlap to 'allow'."
            )
        run_records.settle_stale_runs(active.stale)
        (run_id,) = run_records.defer_runs(
            [RunToDefer.of(task, procrastinate_task, now, manual=True)]
        )
    return TaskRun.objects.get(pk=run_id)


def cancel_pending(task_ids: list[int]) -> int:
    """Cancel the still-``todo`` jobs of these Tasks; returns how many were cancelled."""
    return jobs.cancel_pending_runs(TaskRun.objects.filter(task_id__in=task_ids))
