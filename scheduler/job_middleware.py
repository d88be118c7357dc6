"""procrastinate task middleware: keeps each TaskRun in step with the job that executes it.

Status changes are recorded by a database trigger on ``procrastinate_jobs`` (see
:mod:`scheduler.run_records`): when procrastinate marks a job doing, succeeded, failed,
cancelled or back to todo, the TaskRun and its ``attempt_log`` follow in the same
transaction, at no extra round trip. What only Python knows — the exception of a failed
attempt, whether it will be retried — is recorded by this worker-wide sync task
middleware (named in setting ``PROCRASTINATE_WORKER_DEFAULTS``) through
:func:`scheduler.run_records.record_failure`; it also tags the attempt's log lines.

A failure's text is read by every member of the tenant and by whoever reads the worker's
log, and it may quote a remote server that echoed the token back. Before it is stored,
every Locker value of the job's tenant is masked in it, in place in the exception too, so
procrastinate's own log line of the failure (written after this middleware returns) shows
the masked text; the values are remembered so the log filter masks them in any line.

An expected failure (``IntegrationError``: missing token, rejected token, bad config;
``RetryLater``: a rate limit; ``RemoteUnavailable``: the remote service down) says all there
is to say in its message, and it may recur every tick: it is logged here as one WARNING
line, under the job's tenant, Task, job and attempt, and procrastinate's own record of it,
with a traceback of our call stack, is dropped (see
:mod:`scheduler.logcontext`). Any other failure is a bug to read in full: procrastinate logs
it once, with its traceback.

Settings import this module before Django's app registry is ready: what needs models is
imported when a job runs.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from procrastinate import JobContext

from integrations.base import redact
from integrations.base.errors import IntegrationError, RemoteUnavailable, RetryLater
from scheduler.logcontext import job_context, mark_reported

logger = logging.getLogger(__name__)

#: Failures integration code raises on purpose, with a message saying what to do: logged as
#: one WARNING line, without a traceback (which would only show our own call stack).
EXPECTED_FAILURES = (IntegrationError, RetryLater, RemoteUnavailable)
#: An expected failure's line is cut to this many characters.
LOG_LINE_LIMIT = 1000


def record_run(call_next: Any, context: JobContext, worker: Any) -> Any:
    job = context.job
    if "task_id" not in job.task_kwargs:
        return call_next()
    with job_context(
        tenant=job.queue,
        task=job.task_kwargs.get("task_id"),
        job=job.id,
        attempt=job.attempts + 1,
    ):
        try:
            return call_next()
        except BaseException as exc:
            replacement = _record_failure(exc, context)
            if replacement is None:
                raise
            raise replacement from None


def _record_failure(exc: BaseException, context: JobContext) -> BaseException | None:
    """Store the masked failure on the job's TaskRun and log an expected one in one line.
    Returns the exception to raise instead of ``exc``, if its text would not come clean."""
    from scheduler import run_records

    job = context.job
    strategy = context.task.retry_strategy if context.task else None
    retrying = strategy is not None and strategy.get_retry_exception(exc, job) is not None
    secrets = _job_secrets(job)
    clean = redact.scrub_exception(exc, secrets)
    summary = redact.redact(f"{type(exc).__name__}: {exc}", secrets)
    trace = redact.redact("".join(traceback.format_exception(exc)), secrets)
    run_records.record_failure(
        job.id,
        outcome="retry" if retrying else "failed",
        summary=summary,
        error=f"{summary}\n\n{trace}",
    )
    replacement = None
    if not clean and isinstance(exc, Exception):
        # Its text would not come clean: what travels on (to procrastinate's log and
        # retry decision) is a plain error with the masked text, retried by the policy.
        replacement = redact.RedactedError(summary)
    if isinstance(exc, EXPECTED_FAILURES):
        outcome = "will be retried" if retrying else "failed"
        line = redact.excerpt(summary, limit=LOG_LINE_LIMIT)
        logger.warning("%s %s: %s", job.task_name, outcome, line)
        mark_reported(replacement or exc)
    return replacement


def _job_secrets(job: Any) -> list[str]:
    """The Locker values of the job's tenant (plus every value this process has read), and
    remember them for the log filter. Never fails: the job's own error matters more."""
    secrets = redact.known_secrets()
    try:
        from integrations.models import Integration

        tenant_id = (
            Integration.objects.filter(pk=job.task_kwargs.get("integration_id"))
            .values_list("tenant_id", flat=True)
            .first()
        )
        tenant_values = redact.tenant_secrets(tenant_id)
    except Exception:  # e.g. the database is gone; keep what we know
        return secrets
    redact.remember(tenant_values)
    return [*tenant_values, *secrets]
