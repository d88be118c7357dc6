"""``/healthz`` for load balancers and orchestrators, ``/metrics`` for Prometheus.

``/healthz`` answers 200 only when the system can do its job: the database answers, every
migration is applied, and the scheduler ticked within two periods (a dead or stuck
scheduler worker is the failure nothing else would reveal). Otherwise 503, with a small
JSON body naming the failing checks. It needs no login and shows no tenant data.

``/metrics`` is computed from the database on each scrape, by a collector in a registry
of its own (not prometheus-client's global one), so every web process reports the same
numbers, whichever one Prometheus reaches. Set ``METRICS_TOKEN`` to require
``Authorization: Bearer <token>``; it is open when that setting is empty.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Callable, Iterator

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric

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


_SCHEDULER_WORKER_SQL = """
    SELECT max(p.last_heartbeat)
      FROM procrastinate_workers p
      JOIN scheduler_workerinfo w ON w.id = p.id
     WHERE w.queues IS NULL OR w.queues ? 'scheduler'
"""


def check_scheduler_worker() -> str:
    """A worker serving queue ``scheduler`` is alive: its heartbeat (every 10 s) is recent.

    This catches a frozen or killed scheduler long before two periods have passed.
    """
    with connection.cursor() as cursor:
        cursor.execute(_SCHEDULER_WORKER_SQL)
        heartbeat = cursor.fetchone()[0]
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


# ----------------------------------------------------------------------------- /metrics

_JOBS_SQL = "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2"

# Lateness of a run: when its first attempt started minus the tick it was for. The first
# attempt (attempt_log[0]), so retries and rate-limit waits do not count as lateness.
_LATENESS_SQL = """
    WITH recent AS (
        SELECT extract(epoch FROM first_start - scheduled_for)::float8 AS lateness
          FROM (SELECT scheduled_for,
                       COALESCE((attempt_log -> 0 ->> 'started_at')::timestamptz, started_at)
                           AS first_start
                  FROM scheduler_taskrun
                 WHERE started_at IS NOT NULL AND started_at >= now() - interval '1 hour') r
         WHERE first_start >= now() - interval '1 hour'
    )
    SELECT count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lateness),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lateness),
           max(lateness)
      FROM recent
"""

_TASK_TOTALS_SQL = """
    SELECT COALESCE(sum(missed_count), 0), COALESCE(sum(skipped_count), 0)
      FROM scheduler_task
"""


class MetronomeCollector:
    """Reads the database on every scrape; holds no state between scrapes."""

    def describe(self) -> list[Metric]:
        return []  # nothing to declare up front, and no query at registration time

    def collect(self) -> Iterator[Metric]:
        with connection.cursor() as cursor:
            cursor.execute(_JOBS_SQL)
            jobs = cursor.fetchall()
            cursor.execute(_LATENESS_SQL)
            runs, p50, p95, worst = cursor.fetchone()
            cursor.execute(_TASK_TOTALS_SQL)
            missed, skipped = cursor.fetchone()
        tick = SchedulerTick.objects.order_by("-started_at").first()

        family = GaugeMetricFamily(
            "metronome_jobs",
            "procrastinate jobs by queue (a tenant id, or 'scheduler') and status.",
            labels=["queue", "status"],
        )
        for queue, status, count in sorted(jobs):
            family.add_metric([queue, status], count)
        yield family

        if tick is not None:
            yield GaugeMetricFamily(
                "metronome_scheduler_last_tick_duration_seconds",
                "How long the latest scheduler tick took.",
                value=tick.duration.total_seconds(),
            )
            yield GaugeMetricFamily(
                "metronome_scheduler_last_tick_age_seconds",
                "Seconds since the latest scheduler tick started (absent before the first).",
                value=(timezone.now() - tick.started_at).total_seconds(),
            )

        family = GaugeMetricFamily(
            "metronome_taskrun_lateness_seconds",
            "First start of a run minus the tick it was for, over runs started in the last "
            "hour: quantile 0.5, 0.95 and 1 (the maximum). Absent when no run started.",
            labels=["quantile"],
        )
        if runs:
            for quantile, value in (("0.5", p50), ("0.95", p95), ("1", worst)):
                family.add_metric([quantile], value)
        yield family
        yield GaugeMetricFamily(
            "metronome_taskrun_lateness_runs",
            "Number of runs the lateness quantiles are computed from (started in the last hour).",
            value=runs,
        )
        yield GaugeMetricFamily(
            "metronome_task_missed_ticks",
            "Sum of missed_count over all Tasks: ticks missed and not run (catch-up policy). "
            "A gauge, since deleting a Task lowers it.",
            value=missed,
        )
        yield GaugeMetricFamily(
            "metronome_task_skipped_ticks",
            "Sum of skipped_count over all Tasks: ticks skipped by the overlap policy. "
            "A gauge, since deleting a Task lowers it.",
            value=skipped,
        )


REGISTRY = CollectorRegistry()
REGISTRY.register(MetronomeCollector())


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; 401 without the right bearer token when one is set."""
    if not _authorized(request):
        response = HttpResponse(
            "Missing or wrong bearer token: send 'Authorization: Bearer <METRICS_TOKEN>'.\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        payload = generate_latest(REGISTRY)
    except DatabaseError as exc:
        return HttpResponse(
            f"metrics unavailable: database error ({type(exc).__name__})\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(payload, content_type=CONTENT_TYPE_LATEST)
