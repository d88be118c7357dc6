"""Bounded audit trail: entries older than ``AUDIT_RETENTION_DAYS`` are deleted.

Called by the maintenance job after the TaskRun purge, with the same
:class:`scheduler.retention.Pacing` (batches of ``RETENTION_BATCH_SIZE``, one short
statement each, within the same time budget). Age is all that counts: the entries of a
deleted tenant, user or object go when they are old, like every other (the trail outlives
its tenant, not its retention). Index ``created_at`` makes each batch's selection cheap.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.db import connection
from django.utils import timezone

from scheduler.retention import Pacing, PurgeResult, purge_in_batches, retention_days_problem

# By physical address (ctid) of the oldest rows, locked as chosen: the plan stays an index
# scan of ``created_at`` however large the table (an ``id IN (...)`` form made PostgreSQL
# scan the whole table to join), and two maintenance runs at once split the rows (SKIP
# LOCKED) instead of waiting on each other.
_DELETE_ENTRIES_SQL = """
    DELETE FROM scheduler_auditentry
     WHERE ctid = ANY(ARRAY(
        SELECT ctid
          FROM scheduler_auditentry
         WHERE created_at < %(cutoff)s
         ORDER BY created_at
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED))
"""


def purge_audit_entries(
    now: dt.datetime | None = None,
    *,
    retention_days: int | None = None,
    pacing: Pacing | None = None,
) -> PurgeResult:
    """Delete audit entries created more than ``retention_days`` (default
    ``AUDIT_RETENTION_DAYS``; 0 keeps them forever) before ``now``, in batches."""
    days = settings.AUDIT_RETENTION_DAYS if retention_days is None else retention_days
    if days <= 0:
        return PurgeResult()
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)

    def delete_batch(limit: int) -> int:
        with connection.cursor() as cursor:
            cursor.execute(_DELETE_ENTRIES_SQL, {"cutoff": cutoff, "limit": limit})
            return cursor.rowcount

    return purge_in_batches(delete_batch, pacing or Pacing.from_settings())


@register()
def check_audit_retention(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``audit.E001``: ``AUDIT_RETENTION_DAYS`` is 0 (forever) or a whole number of days."""
    if app_configs is not None and not any(c.label == "audit" for c in app_configs):
        return []
    problem = retention_days_problem(
        "AUDIT_RETENTION_DAYS", getattr(settings, "AUDIT_RETENTION_DAYS", None)
    )
    if not problem:
        return []
    return [
        Error(
            problem,
            hint="Set AUDIT_RETENTION_DAYS to the days of audit trail to keep, e.g. "
            "AUDIT_RETENTION_DAYS=365, or 0 to keep every entry.",
            id="audit.E001",
        )
    ]
