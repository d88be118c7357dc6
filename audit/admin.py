"""The audit trail in admin: read-only, scoped to the user's tenants like everything else."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from audit.models import AuditEntry
from tenants.admin_base import TenantScopedAdmin, ValuesFilter


@admin.register(AuditEntry)
class AuditEntryAdmin(TenantScopedAdmin):
    list_display = ["created_at", "username", "action", "model", "object_repr", "tenant"]
    list_filter = [
        ValuesFilter.of("action", "action", labels=dict(AuditEntry.Action.choices)),
        ValuesFilter.of("model", "model"),
        ("tenant", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["object_repr", "username"]
    list_select_related = ["tenant"]
    readonly_fields = [
        "created_at",
        "username",
        "user",
        "tenant",
        "action",
        "model",
        "object_id",
        "object_repr",
        "changes",
    ]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
