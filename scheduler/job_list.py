"""What the job list shows besides procrastinate's own columns.

A procrastinate job row knows its queue, status and count of attempts; the list also shows
whose queue it is (the tenant's name), the time the run was meant for, when the current or
last attempt started and finished, and how long it took. :func:`with_details` adds these to
the list's own query as correlated subqueries (each an index lookup, evaluated only for the
rows of the page), so the page costs no query more, whatever the number of rows.

System jobs (the ``scheduler`` and maintenance jobs, queue ``scheduler``) are hidden from
the list unless asked for: :class:`SystemJobsFilter`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.db.models import BigIntegerField, Case, OuterRef, QuerySet, Subquery, When
from django.db.models.functions import Cast
from django.http import HttpRequest
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from scheduler.models import TaskRun
from scheduler.queues import SCHEDULER_QUEUE
from tenants.models import Tenant

#: procrastinate's events that end an attempt, or a job that never ran (``cancelled``).
END_EVENTS = ("succeeded", "failed", "aborted", "cancelled", "deferred_for_retry")
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "aborted"})
#: A tenant's queue is its id (``tenants.queues``): digits only, within bigint.
_TENANT_QUEUE = r"^[0-9]{1,18}$"


def _last_event(*types: str) -> Subquery:
    events = ProcrastinateEvent.objects.filter(job_id=OuterRef("id"), type__in=types)
    return Subquery(events.order_by("-at").values("at")[:1])


def with_details(queryset: QuerySet[ProcrastinateJob]) -> QuerySet[ProcrastinateJob]:
    """The jobs with what :func:`details_of` reads, in the same query."""
    tenant_id = Case(
        When(queue_name__regex=_TENANT_QUEUE, then=Cast("queue_name", BigIntegerField())),
        default=None,
        output_field=BigIntegerField(),
    )
    run = TaskRun.objects.filter(job_id=OuterRef("id")).order_by()
    tenant = Tenant.objects.filter(pk=OuterRef("detail_tenant_id")).order_by().values("name")
    return queryset.annotate(detail_tenant_id=tenant_id).annotate(
        detail_tenant=Subquery(tenant[:1]),
        detail_intended=Subquery(run.values("scheduled_for")[:1]),
        detail_started=_last_event("started"),
        detail_ended=_last_event(*END_EVENTS),
    )


@dataclass(frozen=True)
class JobDetails:
    """One job's line in the list, besides procrastinate's own columns."""

    tenant_name: str | None
    intended: dt.datetime | None
    started: dt.datetime | None
    finished: dt.datetime | None
    attempts: int

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started is None or self.finished is None or self.finished < self.started:
            return None
        return self.finished - self.started


def attempts_made(job: ProcrastinateJob) -> int:
    """Attempts made so far, the running one included.

    procrastinate counts an attempt when it ends (``attempts`` is 0 while the first runs);
    a run's attempt log numbers the running attempt already, and so does this.
    """
    return job.attempts + (1 if job.status == "doing" else 0)


def intended_time(args: Any) -> dt.datetime | None:
    """The time a job's arguments say it is for: a scheduled run's ``scheduled_for`` (ISO
    8601), or a periodic job's ``timestamp`` (the tick, in seconds); None for other jobs."""
    if not isinstance(args, dict):
        return None
    when = args.get("scheduled_for")
    if isinstance(when, str):
        try:
            parsed = dt.datetime.fromisoformat(when)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    stamp = args.get("timestamp")
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        try:
            return dt.datetime.fromtimestamp(stamp, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def details_of(job: ProcrastinateJob) -> JobDetails:
    """The job's details, from the columns :func:`with_details` added (read for this job
    alone when it came from elsewhere)."""
    if not hasattr(job, "detail_started"):
        job = with_details(ProcrastinateJob.objects.filter(pk=job.pk)).get()
    started, ended = job.detail_started, job.detail_ended  # type: ignore[attr-defined]
    return JobDetails(
        tenant_name=job.detail_tenant,  # type: ignore[attr-defined]
        intended=job.detail_intended or intended_time(job.args),  # type: ignore[attr-defined]
        # A job waiting for its first run or for a retry has no attempt under way.
        started=started if job.status != "todo" else None,
        finished=ended if job.status in FINAL_STATUSES else None,
        attempts=attempts_made(job),
    )


class SystemJobsFilter(admin.SimpleListFilter):
    """Tenant jobs only by default; the scheduler's own jobs on request (superusers).

    Choosing the ``scheduler`` queue in the queue filter shows its jobs too.
    """

    title = "system jobs"
    parameter_name = "system"
    DEFAULT_LABEL = "Hidden"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        if not request.user.is_superuser:
            return []  # only superusers see queue ``scheduler``
        return [("show", "Shown"), ("only", "Only system jobs")]

    def choices(self, changelist: Any) -> Any:
        """Django's choices, the first ("All", no value) named for what it does: hide."""
        choices = super().choices(changelist)
        first = next(choices)
        yield {**first, "display": self.DEFAULT_LABEL}
        yield from choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "show":
            return queryset
        if self.value() == "only":
            return queryset.filter(queue_name=SCHEDULER_QUEUE)
        if request.GET.get("queue") == SCHEDULER_QUEUE:
            return queryset
        return queryset.exclude(queue_name=SCHEDULER_QUEUE)
