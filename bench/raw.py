"""The raw-procrastinate side of each comparison: the same work without Metronome.

Everything here goes through procrastinate's own API (``JobManager.batch_defer_jobs``, its
``defer_periodic_job`` query) on Django's connection, the path Metronome's tick uses too,
so a ratio measures Metronome's own work and nothing else.
"""

from __future__ import annotations

import datetime as dt

from procrastinate import sql
from procrastinate.contrib.django import django_connector
from procrastinate.jobs import Job
from procrastinate.manager import JobManager

from bench.common import NOW
from bench.seed import Fleet


def _manager() -> JobManager:
    return JobManager(django_connector.DjangoConnector())


def equivalent_jobs(fleet: Fleet, count: int, when: dt.datetime = NOW) -> list[Job]:
    """Jobs shaped like the tick's: same task, queues and arguments."""
    tenants, integrations = fleet.tenant_ids, fleet.integration_ids
    return [
        Job(
            id=None,
            queue=str(tenants[i % len(tenants)]),
            lock=None,
            queueing_lock=None,
            task_name="github.get_users",
            task_kwargs={
                "task_id": i + 1,
                "scheduled_for": when.isoformat(),
                "integration_id": integrations[i % len(integrations)],
                "kwargs": {},
                "retry": {"max_attempts": 1, "backoff_seconds": 60.0},
            },
        )
        for i in range(count)
    ]


def batch_defer(fleet: Fleet, count: int) -> int:
    """Build and defer ``count`` jobs in one transaction, as the tick does; returns how many."""
    from django.db import transaction

    with transaction.atomic():
        return len(_manager().batch_defer_jobs(equivalent_jobs(fleet, count)))


def periodic_defer(timestamp: int, task_name: str = "scheduler") -> int | None:
    """What procrastinate itself does once per period for a periodic task: one query."""
    connector = django_connector.DjangoConnector()
    row = connector.execute_query_one(
        query=sql.queries["defer_periodic_job"],
        task_name=task_name,
        defer_timestamp=timestamp,
        periodic_id="bench",
        queue="scheduler",
        priority=0,
        lock=None,
        queueing_lock=None,
        args={"timestamp": timestamp},
    )
    return row["id"]


def fleet_from_db() -> Fleet:
    """The tenants seeded by another process, and their first integration each."""
    from bench.common import fetch

    rows = fetch(
        "SELECT t.id, min(i.id) FROM tenants_tenant t JOIN integrations_integration i "
        "ON i.tenant_id = t.id GROUP BY t.id ORDER BY t.id"
    )
    return Fleet([r[0] for r in rows], [r[1] for r in rows])
