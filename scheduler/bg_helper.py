"""The workflow's "View tasks": list procrastinate jobs from ``manage.py shell``.

    from scheduler.bg_helper import BgHelper, bg_app

    bg_app.open()  # optional: Django's connection already serves the listing
    [print(job) for job in BgHelper().list_jobs()]

``bg_app`` is procrastinate's Django app under the name the workflow's "View tasks" lines
import and open; :class:`BgHelper` reads jobs through Django's ORM and needs nothing else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from procrastinate.contrib.django import app as bg_app
from procrastinate.contrib.django.models import ProcrastinateJob

from tenants.models import Tenant
from tenants.queues import queue_for

__all__ = ["STATUSES", "BgHelper", "JobInfo", "bg_app"]

STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborting", "aborted")


@dataclass(frozen=True)
class JobInfo:
    id: int
    queue: str
    task_name: str
    status: str
    scheduled_at: dt.datetime | None
    attempts: int
    task_id: int | None
    scheduled_for: str | None

    def __str__(self) -> str:
        when = self.scheduled_for or (self.scheduled_at.isoformat() if self.scheduled_at else "-")
        task = f" task={self.task_id}" if self.task_id is not None else ""
        return (
            f"job {self.id} [{self.status}] {self.task_name} queue={self.queue}{task} "
            f"for={when} attempts={self.attempts}"
        )


class BgHelper:
    def list_jobs(
        self,
        queue: str | None = None,
        status: str | None = None,
        tenant: Tenant | int | None = None,
        limit: int = 100,
    ) -> list[JobInfo]:
        """The newest jobs first, optionally for one queue, status or tenant."""
        jobs = ProcrastinateJob.objects.order_by("-id")
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
            jobs = jobs.filter(status=status)
        if queue is not None:
            jobs = jobs.filter(queue_name=str(queue))
        if tenant is not None:
            tenant_id = tenant.pk if isinstance(tenant, Tenant) else int(tenant)
            jobs = jobs.filter(queue_name=queue_for(tenant_id))
        rows = jobs.values(
            "id", "queue_name", "task_name", "status", "scheduled_at", "attempts", "args"
        )[: max(0, int(limit))]
        return [self._info(row) for row in rows]

    @staticmethod
    def _info(row: Mapping[str, Any]) -> JobInfo:
        args = row["args"] if isinstance(row["args"], dict) else {}
        return JobInfo(
            id=row["id"],
            queue=row["queue_name"],
            task_name=row["task_name"],
            status=row["status"],
            scheduled_at=row["scheduled_at"],
            attempts=row["attempts"],
            task_id=args.get("task_id"),
            scheduled_for=args.get("scheduled_for"),
        )
