"""Edits that must stop work already queued: deleting a Task, disabling its tenant or
integration cancel its still-``todo`` jobs (running ones finish)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save, pre_delete
from django.dispatch import receiver

from integrations.models import Integration
from scheduler.jobs import cancel_pending_runs
from scheduler.models import Task, TaskRun
from scheduler.runs import cancel_pending
from tenants.models import Tenant


@receiver(pre_delete, sender=Task)
def cancel_runs_of_deleted_task(sender: Any, instance: Task, **kwargs: Any) -> None:
    cancel_pending([instance.pk])


@receiver(post_save, sender=Tenant)
def cancel_runs_of_inactive_tenant(sender: Any, instance: Tenant, **kwargs: Any) -> None:
    if not instance.is_active:
        cancel_pending_runs(TaskRun.objects.filter(tenant_id=instance.pk))


@receiver(post_save, sender=Integration)
def cancel_runs_of_disabled_integration(sender: Any, instance: Integration, **kwargs: Any) -> None:
    if not instance.enabled:
        cancel_pending(list(instance.tasks.values_list("pk", flat=True)))
