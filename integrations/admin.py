"""Admin for integrations, with their tasks inline.

What an integration type stores has its admin in the type's own app
(``integrations/<type>/admin.py``), found by Django's admin autodiscovery.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from integrations.base import registry
from integrations.models import Integration
from tenants.admin_base import TenantScopedAdmin, ValuesFilter


class IntegrationForm(forms.ModelForm):
    name = forms.ChoiceField(choices=registry.choices, help_text="Integration type.")

    class Meta:
        model = Integration
        fields = ["tenant", "name", "config", "enabled"]


class TaskInline(admin.TabularInline):
    # Reached through the relation: the scheduler app depends on this one, not back.
    model = Integration._meta.get_field("tasks").related_model

    fields = ["name", "cron", "enabled", "next_run_at"]
    readonly_fields = ["name", "cron", "enabled", "next_run_at"]
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Integration | None = None) -> bool:
        return False  # tasks are authored on their own page (choices, live preview)

    def has_view_permission(self, request: HttpRequest, obj: Integration | None = None) -> bool:
        return True  # the integration page already checked the tenant


@admin.register(Integration)
class IntegrationAdmin(TenantScopedAdmin):
    form = IntegrationForm
    list_display = ["name", "tenant", "enabled", "created_at"]
    list_filter = [
        ValuesFilter.of("name", "integration type"),
        "enabled",
        ("tenant", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["name", "tenant__name"]
    list_select_related = ["tenant"]
    inlines = [TaskInline]
