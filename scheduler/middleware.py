"""Keeps each TaskRun in step with the procrastinate job that executes it.

A worker-wide sync task middleware (installed by ``scheduler.hooks.on_app_ready``): it
runs in the job's thread around every task and acts only on jobs the scheduler made
(those with a ``task_id`` argument), finding their run by job id. Each attempt is
appended to ``TaskRun.attempt_log``.
"""

from __future__ import annotations

import traceback
from typing import Any

from django.db import close_old_connections, connection
from django.utils import timezone
from procrastinate import JobContext

from scheduler.logcontext import job_context

_START_SQL = """
    UPDATE scheduler_taskrun
       SET status = 'doing', started_at = %(now)s, finished_at = NULL, attempts = %(attempt)s,
           attempt_log = attempt_log || jsonb_build_array(jsonb_build_object(
               'attempt', %(attempt)s, 'started_at', %(now)s::text, 'worker', %(worker)s))
     WHERE job_id = %(job_id)s
"""

_END_SQL = """
    UPDATE scheduler_taskrun
       SET status = %(status)s, finished_at = %(finished)s, error = %(error)s,
           result = %(result)s::jsonb,
           attempt_log = jsonb_set(attempt_log, ARRAY[(jsonb_array_length(attempt_log) - 1)::text],
               (attempt_log -> -1) || jsonb_build_object(
                   'finished_at', %(now)s::text, 'outcome', %(outcome)s, 'error', %(summary)s))
     WHERE job_id = %(job_id)s
"""


def record_run(call_next: Any, context: JobContext, worker: Any) -> Any:
    job = context.job
    if "task_id" not in job.task_kwargs:
        return call_next()
    close_old_connections()
    _execute(
        _START_SQL,
        job_id=job.id,
        attempt=job.attempts + 1,
        now=timezone.now(),
        worker=getattr(worker, "worker_name", None) or "",
    )
    try:
        with job_context(
            tenant=job.queue,
            task=job.task_kwargs.get("task_id"),
            job=job.id,
            attempt=job.attempts + 1,
        ):
            result = call_next()
    except BaseException as exc:
        strategy = context.task.retry_strategy if context.task else None
        retrying = strategy is not None and strategy.get_retry_exception(exc, job) is not None
        now = timezone.now()
        summary = f"{type(exc).__name__}: {exc}"
        _execute(
            _END_SQL,
            job_id=job.id,
            status="todo" if retrying else "failed",
            finished=None if retrying else now,
            error=f"{summary}\n\n{''.join(traceback.format_exception(exc))}",
            result=None,
            now=now,
            outcome="retry" if retrying else "failed",
            summary=summary,
        )
        raise
    now = timezone.now()
    _execute(
        _END_SQL,
        job_id=job.id,
        status="succeeded",
        finished=now,
        error="",
        result=_json(result),
        now=now,
        outcome="succeeded",
        summary="",
    )
    return result


def _execute(sql: str, **params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _json(value: Any) -> str | None:
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return None


def mark_stalled(job_id: int, now: Any = None) -> None:
    """Close the open attempt of a job whose worker died; the job is being retried."""
    now = now or timezone.now()
    summary = "the worker running this attempt stopped sending heartbeats; retried"
    _execute(
        _END_SQL,
        job_id=job_id,
        status="todo",
        finished=None,
        error=summary,
        result=None,
        now=now,
        outcome="stalled",
        summary=summary,
    )
