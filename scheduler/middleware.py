"""Keeps each TaskRun in step with the procrastinate job that executes it.

Status changes are recorded by a database trigger on ``procrastinate_jobs`` (migration
0004): when procrastinate marks a job doing, succeeded, failed, cancelled or back to
todo, the TaskRun and its ``attempt_log`` follow in the same transaction, at no extra
round trip. What only Python knows — the exception of a failed attempt, whether it will
be retried — is written by this worker-wide sync task middleware (installed by
``scheduler.hooks.on_app_ready``), which also tags the attempt's log lines.
"""

from __future__ import annotations

import traceback
from typing import Any

from django.db import connection
from django.utils import timezone
from procrastinate import JobContext

from scheduler.logcontext import job_context

# Closes the open attempt with its outcome; the trigger then leaves the entry alone.
_FAILED_SQL = """
    UPDATE scheduler_taskrun
       SET error = %(error)s,
           attempt_log = CASE WHEN jsonb_array_length(attempt_log) = 0 THEN attempt_log
               ELSE jsonb_set(attempt_log, ARRAY[(jsonb_array_length(attempt_log) - 1)::text],
                   (attempt_log -> -1) || jsonb_build_object(
                       'finished_at', %(now)s::text, 'outcome', %(outcome)s,
                       'error', %(summary)s)) END
     WHERE job_id = %(job_id)s
"""


def record_run(call_next: Any, context: JobContext, worker: Any) -> Any:
    job = context.job
    if "task_id" not in job.task_kwargs:
        return call_next()
    try:
        with job_context(
            tenant=job.queue,
            task=job.task_kwargs.get("task_id"),
            job=job.id,
            attempt=job.attempts + 1,
        ):
            return call_next()
    except BaseException as exc:
        strategy = context.task.retry_strategy if context.task else None
        retrying = strategy is not None and strategy.get_retry_exception(exc, job) is not None
        summary = f"{type(exc).__name__}: {exc}"
        _record_failure(
            job.id,
            outcome="retry" if retrying else "failed",
            summary=summary,
            error=f"{summary}\n\n{''.join(traceback.format_exception(exc))}",
        )
        raise


def mark_stalled(job_id: int) -> None:
    """Close the open attempt of a job whose worker died; the job is being retried."""
    summary = "the worker running this attempt stopped sending heartbeats; retried"
    _record_failure(job_id, outcome="stalled", summary=summary, error=summary)


def _record_failure(job_id: int, *, outcome: str, summary: str, error: str) -> None:
    """The status itself follows when procrastinate fails or retries the job (trigger)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _FAILED_SQL,
            {
                "job_id": job_id,
                "outcome": outcome,
                "summary": summary,
                "error": error,
                "now": timezone.now(),
            },
        )
