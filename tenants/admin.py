"""Admin for tenants and their secrets, scoped to the tenants a user belongs to."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from tenants.access import TenantScopedAdmin, can_edit
from tenants.models import Locker, Membership, Tenant, default_time_zone, time_zone_names


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_edit(request.user, obj.pk if obj is not None else None)

    has_change_permission = has_add_permission
    has_delete_permission = has_add_permission

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent page already checked the tenant


class TenantForm(forms.ModelForm):
    timezone = forms.ChoiceField(
        choices=lambda: [(z, z) for z in sorted(time_zone_names())],
        initial=default_time_zone,
        help_text="IANA time zone in which this tenant's cron expressions are read.",
    )

    class Meta:
        model = Tenant
        fields = ["name", "email", "owner", "timezone", "is_active"]


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    form = TenantForm
    tenant_path = "pk"
    list_display = ["name", "id", "email", "owner", "timezone", "is_active", "paused_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "email"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    inlines = [MembershipInline]
    readonly_fields = ["paused_at", "pause_note", "paused_until"]

    def get_actions(self, request: HttpRequest) -> dict:
        from scheduler.admin_actions import pause_tenants, resume_tenants

        found = super().get_actions(request)
        for action in (pause_tenants, resume_tenants):
            found[action.__name__] = (action, action.__name__, action.short_description)
        return found

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser  # tenants are created by operators

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class LockerForm(forms.ModelForm):
    """The stored value never reaches the browser: it can only be replaced."""

    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        label="Replace value",
        help_text="Write-only. Leave empty to keep the stored value.",
    )

    class Meta:
        model = Locker
        fields = ["tenant", "key", "value"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial.pop("value", None)
        if not self.instance.pk:
            self.fields["value"].required = True
            self.fields["value"].label = "Value"
            self.fields["value"].help_text = "Write-only: it is never shown again."

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk and not cleaned.get("value"):
            cleaned.pop("value", None)  # keep the stored secret untouched
        return cleaned


@admin.register(Locker)
class LockerAdmin(TenantScopedAdmin):
    form = LockerForm
    list_display = ["key", "tenant", "masked_value", "updated_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["key", "tenant__name"]
    list_select_related = ["tenant"]

    @admin.display(description="value")
    def masked_value(self, obj: Locker) -> str:
        return "••••••••"
