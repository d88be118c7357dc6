"""How an integration type declares its procrastinate tasks.

The scheduler defers a job per due Task with these arguments: ``task_id``,
``scheduled_for`` (ISO 8601, the intended tick), ``integration_id``, ``kwargs`` (the
Task's kwargs) and ``retry`` (the Task's retry policy). :func:`integration_task` turns
them into a :class:`RunContext` and calls the integration's function with it.
Integration code never sees the scheduler's models; the scheduler records runs around
it (see ``scheduler/job_middleware.py``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from procrastinate import JobContext, RetryDecision
from procrastinate.contrib.django import app
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy
from procrastinate.types import JSONDict

from integrations.base import redact
from integrations.base.errors import IntegrationError, RetryLater
from integrations.base.errors import RemoteUnavailable as RemoteUnavailable  # re-exported
from integrations.base.registry import IntegrationType, TaskSpec
from integrations.models import Integration
from tenants.models import Locker, Tenant

#: How often a job may be put back because the remote API asked us to wait.
MAX_RETRY_LATER = 20


class TaskRetryStrategy(BaseRetryStrategy):
    """Retries as the job's ``retry`` argument says (the Task's policy), and at the time
    a :class:`RetryLater` names. An :class:`IntegrationError` (bad config, missing
    secret) is not retried: waiting will not fix it."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            if job.attempts < MAX_RETRY_LATER:
                return RetryDecision(retry_at=exception.retry_at)
            return None
        if isinstance(exception, IntegrationError):
            return None
        policy = job.task_kwargs.get("retry") or {}
        if not isinstance(policy, dict):
            raise TypeError(
                f"Job {job.id}: 'retry' must be a JSON object such as "
                f"{{'max_attempts': 3, 'backoff_seconds': 60}}, not {policy!r}."
            )
        max_attempts = int(_policy_number(policy, "max_attempts", 1))
        if job.attempts + 1 >= max_attempts:
            return None
        backoff = float(_policy_number(policy, "backoff_seconds", 60)) * (2**job.attempts)
        return RetryDecision(retry_in={"seconds": backoff})


def _policy_number(policy: JSONDict, key: str, default: int) -> int | float | str:
    """A retry policy's ``key``: a number (or its text, as int() and float() read it)."""
    value = policy.get(key, default)
    if not isinstance(value, int | float | str):
        raise TypeError(f"The retry policy's '{key}' must be a number, not {value!r}.")
    return value


@dataclass(frozen=True)
class RunContext:
    """What an integration task gets to know about the run it performs.

    The integration and tenant are loaded on first use, so a task that needs neither
    costs no query.
    """

    integration_id: int
    task_id: int | None
    scheduled_for: dt.datetime | None
    job_id: int | None
    attempt: int
    #: The run's retry policy; follow-up jobs deferred with :meth:`defer` get it too.
    retry: dict[str, Any] | None = None

    @cached_property
    def integration(self) -> Integration:
        return Integration.objects.select_related("tenant").get(pk=self.integration_id)

    @property
    def tenant(self) -> Tenant:
        return self.integration.tenant

    @property
    def config(self) -> dict[str, Any]:
        return self.integration.config

    def secret(self, key: str) -> str:
        """The tenant's Locker value for ``key``; raises IntegrationError when missing."""
        value = Locker.get(key, self.tenant.pk)
        if not value:
            raise IntegrationError(
                f"Locker key '{key}' is not set for tenant {self.tenant.pk} ({self.tenant.name}). "
                f"Add it with Locker.add('{key}', '<value>', {self.tenant.pk}) or in admin."
            )
        # From now on this process masks the value in every log line and stored error.
        redact.remember([value])
        return value

    def defer(self, task: str | Callable[..., Any], **kwargs: Any) -> int:
        """Defer a follow-up job of one of this integration type's tasks (its name, e.g.
        ``"sync_repo"``, or the decorated function), for the same integration and retry
        policy, into the tenant's queue with the tenant's fair share: the same priority and
        concurrency-limit treatment as scheduled runs (``scheduler/fairness.py``). It joins
        the caller's transaction, if any. Returns the job's id.

        Raises ValidationError when the type has no such task or the arguments do not fit it.
        """
        from scheduler import jobs  # the scheduler owns procrastinate's tables

        spec = self._task_spec(task)
        spec.validate_kwargs(kwargs)
        return jobs.defer_for_tenant(
            self.integration.tenant_id,
            spec.procrastinate_name,
            {
                "integration_id": self.integration_id,
                "task_id": self.task_id,
                "kwargs": kwargs,
                "retry": self.retry or {},
            },
        )

    def _task_spec(self, task: str | Callable[..., Any]) -> TaskSpec:
        """The integration type's task named or given by ``task``; only its own tasks can be
        deferred, so integration code cannot put other jobs in the tenant's queue."""
        integration_type = self.integration.type
        if isinstance(task, str):
            return integration_type.get_task(task)
        name = getattr(task, "name", None)
        for spec in integration_type.tasks.values():
            if spec.function is task or spec.procrastinate_name == name:
                return spec
        return integration_type.get_task(getattr(task, "__name__", repr(task)))


def integration_task(
    integration_type: type[IntegrationType], name: str | None = None, **task_options: Any
) -> Callable[[Callable[..., Any]], Any]:
    """Register ``func(run: RunContext, **kwargs)`` as task ``<type>.<name>`` of the type."""

    def decorator(func: Callable[..., Any]) -> Any:
        task_name = name or func.__name__
        full_name = f"{integration_type.name}.{task_name}"

        @app.task(name=full_name, pass_context=True, retry=TaskRetryStrategy(), **task_options)
        @functools.wraps(func)
        def job(
            context: JobContext,
            *,
            integration_id: int,
            task_id: int | None = None,
            scheduled_for: str | None = None,
            kwargs: dict[str, Any] | None = None,
            retry: dict[str, Any] | None = None,
        ) -> Any:
            run = RunContext(
                integration_id=integration_id,
                task_id=task_id,
                scheduled_for=dt.datetime.fromisoformat(scheduled_for) if scheduled_for else None,
                job_id=context.job.id,
                attempt=context.job.attempts + 1,
                retry=retry,
            )
            return func(run, **(kwargs or {}))

        integration_type.tasks[task_name] = TaskSpec(full_name, func)
        return job

    return decorator
