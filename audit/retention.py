"""Bounded audit trail: entries older than ``AUDIT_RETENTION_DAYS`` are deleted.

This module deletes one batch (:func:`delete_old_entries`) and checks the setting; the
maintenance job runs the batches after the TaskRun purge, with the same pacing
(:func:`scheduler.retention.purge_audit_entries`: batches of ``RETENTION_BATCH_SIZE``, one
short statement each, within the same time budget), so the audit app imports nothing from
the scheduler. Age is all that counts: the entries of a
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

#: The shortest retention, in days, other than 0 (keep forever).
MIN_RETENTION_DAYS = 1

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


def delete_old_entries(cutoff: dt.datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest entries created before ``cutoff`` (one
    statement); how many."""
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_ENTRIES_SQL, {"cutoff": cutoff, "limit": limit})
        return cursor.rowcount


def retention_days_problem(name: str, value: object) -> str:
    """Why ``value`` is not a retention in days (0 keeps forever); "" when it is."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and (value == 0 or value >= MIN_RETENTION_DAYS):  # type: ignore[operator]
        return ""
    return (
        f"{name} is {value!r}; it must be a whole number of days, at least "
        f"{MIN_RETENTION_DAYS}, or 0 to keep forever."
    )


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
