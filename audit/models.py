"""The audit trail: one row per create, change, delete, pause, resume, run-now or job action."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    """Who did what to which object, and what changed (secret fields masked).

    Written by ``audit.records`` (model signals for the models it watches, and explicit
    ``record()`` calls for actions that are not saves). The table keeps the name it had
    when this model lived in the scheduler app.
    """

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        CHANGE = "change", "Changed"
        DELETE = "delete", "Deleted"
        PAUSE = "pause", "Paused"
        RESUME = "resume", "Resumed"
        RUN_NOW = "run_now", "Run now"
        JOB_RETRY = "job_retry", "Job retried"
        JOB_CANCEL = "job_cancel", "Job cancelled"
        JOB_ABORT = "job_abort", "Job aborted"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text="Kept if the user goes.")
    # The trail outlives its tenant: deleting a tenant keeps its entries (and records the
    # deletion itself), so no database constraint ties them to the tenant row.
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    model = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    changes = models.JSONField(default=dict, blank=True, help_text="field: [before, after]")

    class Meta:
        db_table = "scheduler_auditentry"
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        who = self.username or "system"
        return f"{who} {self.get_action_display().lower()} {self.model} {self.object_repr}"
