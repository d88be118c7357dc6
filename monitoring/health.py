"""``/healthz`` for load balancers and orchestrators.

It answers 200 only when the system can do its job: the database answers, every migration
is applied, the scheduler ticked within two periods and a worker serving queue
``scheduler`` sent a recent heartbeat (a dead, stuck or frozen scheduler worker is the
failure nothing else would reveal). Otherwise 503, with a small JSON body naming the
failing checks. It needs no login and shows no tenant data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from scheduler import jobs
from scheduler.models import SchedulerTick

OK = "ok"

# ----------------------------------------------------------------------------- /healthz


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return OK


def check_migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        return f"{len(plan)} unapplied migration(s): {names}{more}; run manage.py migrate"
    return OK


def check_scheduler() -> str:
    period = dt.timedelta(seconds=settings.SCHEDULER_PERIOD)
    latest = SchedulerTick.objects.order_by("-started_at").values_list("started_at", flat=True)
    started = latest.first()
    if started is None:
        return "no scheduler tick recorded yet; is a worker running on queue 'scheduler'?"
    age = timezone.now() - started
    if age >= 2 * period:
        return (
            f"last scheduler tick {age.total_seconds():.0f}s ago (limit "
            f"{(2 * period).total_seconds():.0f}s, "
            "two SCHEDULER_PERIODs); is a worker running on queue 'scheduler'?"
        )
    return OK


def check_scheduler_worker() -> str:
    """A worker serving queue ``scheduler`` is alive: its heartbeat (every 10 s) is recent.

    This catches a frozen or killed scheduler long before two periods have passed.
    """
    heartbeat = jobs.scheduler_worker_heartbeat()
    limit = settings.SCHEDULER_HEARTBEAT_MAX_AGE
    if heartbeat is None:
        return "no worker serves queue 'scheduler'; start one (WORKER_QUEUES=scheduler)"
    age = (timezone.now() - heartbeat).total_seconds()
    if age > limit:
        return f"the scheduler worker's last heartbeat was {age:.0f}s ago (limit {limit}s)"
    return OK


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "migrations": check_migrations,
    "scheduler": check_scheduler,
    "scheduler_worker": check_scheduler_worker,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 ``{"status": "ok", ...}`` or 503 naming the failing checks."""
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if results.get("database", OK) != OK:
            results[name] = "not checked: database unreachable"
            continue
        try:
            results[name] = check()
        except DatabaseError as exc:
            # The class only: a driver message may carry the host or user name.
            results[name] = f"database error ({type(exc).__name__})"
    failing = [name for name, result in results.items() if result != OK]
    body = {"status": "fail" if failing else OK, "failing": failing, "checks": results}
    return JsonResponse(body, status=503 if failing else 200)
