"""Admin for what the github integration stores (read-only: the sync writes it)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from integrations.github.models import GithubUser
from tenants.access import can_edit
from tenants.admin_base import TenantScopedAdmin


@admin.register(GithubUser)
class GithubUserAdmin(TenantScopedAdmin):
    list_display = ["login", "external_id", "tenant", "site_admin", "last_seen_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "site_admin"]
    search_fields = ["login"]
    list_select_related = ["tenant"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # written by the sync, read here

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return isinstance(obj, GithubUser) and can_edit(request.user, obj.tenant_id)
