"""Puts tenant, Task, job and attempt on every log line emitted while a job runs.

The run middleware sets a context variable around the task; a logging filter copies it
onto each record (``%(job_context)s`` in the format), so integration code logs with plain
``logger.info(...)`` and still says which tenant and job it was working for. The same
filter masks every secret this process has read (see ``integrations/base/redact.py``) in
the record's message and traceback, whichever logger wrote it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from integrations.base.redact import scrub_log_record

_context: contextvars.ContextVar[str] = contextvars.ContextVar("job_context", default="-")


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
