"""Seeding the bench database in bulk: tenants by ``bulk_create``, Tasks by one SQL statement.

Saving Tasks one by one would take minutes at 100,000 rows and measure the ORM, not the
scheduler; ``INSERT … SELECT generate_series`` writes a million in well under a minute.
``next_run_at`` is computed here (from the cron, the zone and :data:`bench.common.NOW`),
exactly as ``Task.save`` would.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import NOW, execute, fetch

#: Zones of whole, half and three-quarter hour offsets, on both sides of UTC.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Adelaide",
    "America/Sao_Paulo",
    "America/Los_Angeles",
)
#: Crons that all fire at NOW in every zone above (checked by :func:`check_crons`), with
#: 5 and 6 fields: a count coprime with the zones' so that every pairing occurs.
CRONS = (
    "* * * * *",
    "*/5 * * * *",
    "*/15 * * * *",
    "*/10 * * * *",
    "0,30 * * * *",
    "*/30 * * * 1-5",
    "0-58/2 * * * *",
    "* * * * * 0",
    "* * * * * */20",
)


@dataclass(frozen=True)
class Fleet:
    """The seeded tenants and, in the same order, each one's integration."""

    tenant_ids: list[int]
    integration_ids: list[int]

    @property
    def queues(self) -> list[str]:
        return [str(pk) for pk in self.tenant_ids]


def wipe() -> None:
    """Empty every table the benchmarks write (the bench database only)."""
    execute(
        "TRUNCATE tenants_tenant, scheduler_schedulertick, procrastinate_jobs, "
        "procrastinate_periodic_defers, procrastinate_events, procrastinate_workers "
        "RESTART IDENTITY CASCADE"
    )


def clear_runs() -> None:
    """Forget every run and job, so that the next measurement starts from the same state."""
    execute(
        "TRUNCATE scheduler_taskrun, scheduler_schedulertick, procrastinate_jobs, "
        "procrastinate_periodic_defers, procrastinate_events RESTART IDENTITY CASCADE"
    )


def vacuum(*tables: str) -> None:
    """Keep dead rows and stale statistics from one repetition out of the next one's plan;
    then a checkpoint, so that every side starts from the same WAL state (after a
    checkpoint, the first change to each page writes the whole page to the WAL: a side
    measured just after one would pay for that, the next not)."""
    for table in tables or ("scheduler_task", "scheduler_taskrun", "procrastinate_jobs"):
        execute(f"VACUUM ANALYZE {table}")
    if fetch(_MAY_CHECKPOINT_SQL)[0][0]:
        execute("CHECKPOINT")


#: Superusers and (PostgreSQL 15 and later) members of pg_checkpoint may run CHECKPOINT.
_MAY_CHECKPOINT_SQL = """
    SELECT rolsuper OR CASE WHEN to_regrole('pg_checkpoint') IS NULL THEN false
                            ELSE pg_has_role(to_regrole('pg_checkpoint'), 'MEMBER') END
      FROM pg_roles WHERE rolname = current_user
"""


def make_fleet(
    tenants: int,
    *,
    integration: str = "github",
    config: dict[str, object] | None = None,
    prefix: str = "bench",
) -> Fleet:
    """``tenants`` tenants (zones cycling through ZONES) with one integration each."""
    from django.contrib.auth import get_user_model

    from integrations.models import Integration
    from tenants.models import Membership, Tenant

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"email": "bench@example.com"}
    )
    created = Tenant.objects.bulk_create(
        Tenant(
            name=f"{prefix}-{i}",
            email=f"ops{i}@bench.example",
            owner=user,
            timezone=ZONES[i % len(ZONES)],
        )
        for i in range(tenants)
    )
    Membership.objects.bulk_create(
        Membership(tenant=t, user=user, role=Membership.Role.OWNER) for t in created
    )
    integrations = Integration.objects.bulk_create(
        Integration(tenant=t, name=integration, config=config or {}) for t in created
    )
    return Fleet([t.pk for t in created], [i.pk for i in integrations])


def check_crons(crons: Sequence[str], zones: Sequence[str], at: dt.datetime = NOW) -> None:
    """Every (cron, zone) pair must fire at ``at``, else "due at NOW" would be a lie."""
    from scheduler.cron import prev_fire

    wrong = [(c, z) for c in crons for z in zones if prev_fire(c, at, z) != at]
    if wrong:
        raise ValueError(f"these crons do not fire at {at.isoformat()}: {wrong}")


def _task_zones() -> tuple[str, ...]:
    """Every zone whose offset at NOW is a whole or half hour: so many that each of a
    tenant's Tasks can differ from the others by its (cron, zone) pair, as identical Tasks
    are refused."""
    from zoneinfo import ZoneInfo, available_timezones

    def fits(name: str) -> bool:
        offset = NOW.astimezone(ZoneInfo(name)).utcoffset()
        return offset is not None and offset.total_seconds() % 1800 == 0

    return tuple(sorted(z for z in available_timezones() if "/" in z and fits(z)))


#: Zones of the Tasks that carry their own (see :func:`insert_tasks`).
TASK_ZONES = _task_zones()

_INSERT_TASKS = """
    INSERT INTO scheduler_task (
        pause_note, name, cron, timezone, kwargs, enabled, catchup, catchup_window,
        catchup_max, overlap, max_attempts, retry_backoff, next_run_at, missed_count,
        skipped_count, created_at, updated_at, integration_id, tenant_id, tenant_rank)
    SELECT '', %(name)s, (%(crons)s::text[])[1 + c],
           CASE WHEN own_zone THEN (%(task_zones)s::text[])[1 + z] ELSE '' END,
           '{}'::jsonb, true, 'latest', interval '24 hours', 100, %(overlap)s, 1,
           interval '60 seconds',
           COALESCE(%(due_at)s::timestamptz,
                    CASE WHEN own_zone THEN (%(own_nexts)s::timestamptz[])[1 + c * %(nzt)s + z]
                         ELSE (%(nexts)s::timestamptz[])[1 + c * %(nz)s + s %% %(nz)s] END),
           0, 0, now(), now(),
           (%(integrations)s::bigint[])[1 + s], (%(tenants)s::bigint[])[1 + s], k + 1
      FROM (SELECT s, k,
                   k >= %(nc)s AS own_zone,
                   CASE WHEN k < %(nc)s THEN k ELSE ((k - %(nc)s) / %(nzt)s) %% %(nc)s END AS c,
                   (k - %(nc)s) %% %(nzt)s AS z
              FROM (SELECT g %% %(nt)s AS s, g / %(nt)s AS k
                      FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g) AS n
           ) AS v
"""


def insert_tasks(
    fleet: Fleet,
    count: int,
    *,
    due_at: dt.datetime | None = NOW,
    name: str = "get_users",
    crons: Sequence[str] = CRONS,
    overlap: str = "skip",
    offset: int = 0,
) -> None:
    """Insert ``count`` enabled Tasks spread round-robin over the fleet's tenants.

    The first ``len(crons)`` Tasks of each tenant read their tenant's zone, one per cron;
    the others carry a zone of their own (:data:`TASK_ZONES`), so that no two Tasks of an
    integration are identical (up to ``len(crons) * (1 + len(TASK_ZONES))`` per tenant).
    With ``due_at`` every Task is due then; with ``None`` each waits for its next fire after
    NOW (none is due at NOW). ``offset`` continues a previous call's pattern.
    """
    from scheduler.cron import next_fire

    per_tenant = -(-(offset + count) // len(fleet.tenant_ids))
    if per_tenant > len(crons) * (1 + len(TASK_ZONES)):
        raise ValueError(f"{per_tenant} distinct Tasks per tenant is more than the seed makes")
    zones = ZONES  # tenant i reads ZONES[i % len(ZONES)] (make_fleet), hence "s % nz"
    nexts = [next_fire(cron, NOW, zone) for cron in crons for zone in zones]
    own_nexts = (
        [next_fire(cron, NOW, zone) for cron in crons for zone in TASK_ZONES]
        if due_at is None
        else []
    )
    execute(
        _INSERT_TASKS,
        {
            "name": name,
            "crons": list(crons),
            "task_zones": list(TASK_ZONES),
            "overlap": overlap,
            "due_at": due_at,
            "nexts": nexts,
            "own_nexts": own_nexts,
            "nz": len(zones),
            "nzt": len(TASK_ZONES),
            "nc": len(crons),
            "nt": len(fleet.tenant_ids),
            "integrations": fleet.integration_ids,
            "tenants": fleet.tenant_ids,
            "start": offset,
            "stop": offset + count - 1,
        },
    )


def make_due(count: int | None, at: dt.datetime = NOW) -> int:
    """Make the first ``count`` Tasks (by id; all of them with None) due at ``at``."""
    if count is None:
        return execute("UPDATE scheduler_task SET next_run_at = %s, last_run_at = NULL", [at])
    if count == 0:
        return 0
    return execute(
        "UPDATE scheduler_task SET next_run_at = %s, last_run_at = NULL "
        "WHERE id IN (SELECT id FROM scheduler_task ORDER BY id LIMIT %s)",
        [at, count],
    )


def task_count() -> int:
    return fetch("SELECT count(*) FROM scheduler_task")[0][0]
