"""Keeps each TaskRun in step with the procrastinate job that executes it.

A worker-wide sync task middleware (installed by ``scheduler.hooks.on_app_ready``): it
runs in the job's thread around every task, and acts only on jobs the scheduler made
(those with a ``run_id`` argument).
"""

from __future__ import annotations

import traceback
from typing import Any

from django.db import close_old_connections
from django.utils import timezone
from procrastinate import JobContext

from scheduler.models import TaskRun


def record_run(call_next: Any, context: JobContext, worker: Any) -> Any:
    run_id = context.job.task_kwargs.get("run_id")
    if run_id is None:
        return call_next()
    close_old_connections()
    TaskRun.objects.filter(pk=run_id).update(
        status=TaskRun.Status.DOING,
        started_at=timezone.now(),
        finished_at=None,
        attempts=context.job.attempts + 1,
        job_id=context.job.id,
    )
    try:
        result = call_next()
    except BaseException as exc:
        strategy = context.task.retry_strategy if context.task else None
        retrying = strategy is not None and strategy.get_retry_exception(exc, context.job)
        TaskRun.objects.filter(pk=run_id).update(
            status=TaskRun.Status.TODO if retrying else TaskRun.Status.FAILED,
            finished_at=None if retrying else timezone.now(),
            error=_describe(exc),
        )
        raise
    TaskRun.objects.filter(pk=run_id).update(
        status=TaskRun.Status.SUCCEEDED,
        finished_at=timezone.now(),
        error="",
        result=result if isinstance(result, dict | list | int | float | str | bool) else None,
    )
    return result


def _describe(exc: BaseException) -> str:
    """The error for users: its message, then the traceback (no locals, so no secrets)."""
    summary = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    return f"{summary}\n\n{trace}"
