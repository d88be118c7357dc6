"""``/metrics`` for Prometheus.

Computed from the database on each scrape, by a collector in a registry of its own (not
prometheus-client's global one), so every web process reports the same numbers, whichever
one Prometheus reaches. With ``DEBUG`` off it answers only a request bearing
``Authorization: Bearer <METRICS_TOKEN>`` when that token is set, and otherwise only
clients whose ``REMOTE_ADDR`` is in ``METRICS_ALLOWED_IPS`` (loopback by default): queue
names, job counts and lateness say which tenants exist and how busy they are.
``X-Forwarded-For`` is never trusted (any client can send it); behind a proxy, list the
proxy or set a token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric

from scheduler import jobs
from scheduler.models import SchedulerTick

# ----------------------------------------------------------------------------- /metrics

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
        job_counts = jobs.job_counts()
        with connection.cursor() as cursor:
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
        for queue, status, count in sorted(job_counts):
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


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """METRICS_ALLOWED_IPS as networks (a bare address is a one-address network)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def address_allowed(remote_addr: str, entries: tuple[str, ...] | list[str]) -> bool:
    """True when ``remote_addr`` is in one of ``entries`` (IPs or CIDR networks).

    An IPv4 client seen through an IPv6 socket (``::ffff:10.0.0.5``) counts as its IPv4
    address. An empty or malformed address (a unix-socket server) is allowed nowhere.
    """
    try:
        address = ipaddress.ip_address(remote_addr.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(entries)))


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _text(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read /metrics, else the 401 or 403 that says why not."""
    token = settings.METRICS_TOKEN
    if token:
        if _bearer_matches(request, token):
            return None
        response = _text(
            "Missing or wrong bearer token: send 'Authorization: Bearer <METRICS_TOKEN>'.\n", 401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if settings.DEBUG:
        return None
    remote = request.META.get("REMOTE_ADDR", "")
    if address_allowed(remote, settings.METRICS_ALLOWED_IPS):
        return None
    return _text(
        f"/metrics is not served to {remote or 'this client'}: add its address (or, behind a "
        "proxy, the proxy's) to METRICS_ALLOWED_IPS, or set METRICS_TOKEN and send "
        "'Authorization: Bearer <METRICS_TOKEN>'.\n",
        403,
    )


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; 401 (token) or 403 (address) for readers not allowed."""
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    try:
        payload = generate_latest(REGISTRY)
    except DatabaseError as exc:
        return _text(f"metrics unavailable: database error ({type(exc).__name__})\n", 503)
    return HttpResponse(payload, content_type=CONTENT_TYPE_LATEST)
