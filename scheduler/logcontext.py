"""What the worker's log says about jobs, and how often.

* **Context.** The run middleware sets a context variable around the task; a logging filter
  copies it onto each record (``%(job_context)s`` in the format), so integration code logs
  with plain ``logger.info(...)`` and still says which tenant and job it was working for. The
  same filter masks every secret this process has read (see ``integrations/base/redact.py``)
  in the record's message and traceback, whichever logger wrote it.
* **Expected failures, one line.** A failure the integration foresaw (missing token, rejected
  token, rate limit: an ``IntegrationError`` or ``RetryLater``) is logged by the run
  middleware as one WARNING line and marked as reported (:func:`mark_reported`);
  :class:`ReportedFailureFilter`, on procrastinate's worker logger, then drops procrastinate's
  own record of it, which carries the full traceback. Any other failure keeps that record and
  its traceback, logged once, by procrastinate alone.
* **Start-up lines once.** procrastinate's Django app registers each periodic task twice at
  start-up (on its pre-start blueprint, then again when copying it into the real app), logging
  "Registering task …" both times; :class:`PeriodicRegistrationFilter` lets each through once
  per process, and not at all in the file watcher of ``runserver``'s autoreloader, which
  serves nothing (its child process logs it).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator

from integrations.base.redact import scrub_log_record

_context: contextvars.ContextVar[str] = contextvars.ContextVar("job_context", default="-")

#: Attribute set on an exception whose failure was already logged in one line.
_REPORTED = "_metronome_failure_reported"
#: procrastinate's ``action`` of the record logged when a job attempt fails.
_JOB_ERROR_ACTIONS = frozenset({"job_error", "job_error_retry"})


@contextlib.contextmanager
def job_context(*, tenant: object, task: object, job: object, attempt: object) -> Iterator[None]:
    token = _context.set(f"tenant={tenant} task={task} job={job} attempt={attempt}")
    try:
        yield
    finally:
        _context.reset(token)


class JobContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.job_context = _context.get()
        scrub_log_record(record)
        return True


def mark_reported(exc: BaseException) -> None:
    """Note that ``exc``'s failure is already in the log (see :class:`ReportedFailureFilter`)."""
    with contextlib.suppress(AttributeError):  # an exception class with __slots__
        setattr(exc, _REPORTED, True)


def was_reported(exc: BaseException | None) -> bool:
    return bool(getattr(exc, _REPORTED, False))


class ReportedFailureFilter(logging.Filter):
    """On logger ``procrastinate.worker``: drops its record of a failed job attempt when the
    run middleware already logged that failure as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) not in _JOB_ERROR_ACTIONS or not record.exc_info:
            return True
        return not was_reported(record.exc_info[1])


class PeriodicRegistrationFilter(logging.Filter):
    """On logger ``procrastinate.periodic``: each "Registering task …" line once per process."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[tuple[object, object]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "action", None) != "registering_periodic_task":
            return True
        if _is_autoreload_watcher():
            return False
        key = (getattr(record, "task", None), getattr(record, "periodic_id", None))
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


def _is_autoreload_watcher() -> bool:
    """Whether this is the parent process of ``manage.py runserver`` with autoreload: it
    only watches files and restarts its child (marked by Django with ``RUN_MAIN=true``)."""
    return (
        sys.argv[1:2] == ["runserver"]
        and "--noreload" not in sys.argv
        and os.environ.get("RUN_MAIN") != "true"
    )
