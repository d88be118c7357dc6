from __future__ import annotations

from django import forms
from django.contrib import admin

from tenants.models import Locker, Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "id", "email", "owner", "timezone", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "email"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    inlines = [MembershipInline]


class LockerForm(forms.ModelForm):
    """The stored value is never sent to the browser: it can only be replaced."""

    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        help_text="Write-only. Leave empty to keep the stored value.",
    )

    class Meta:
        model = Locker
        fields = ["tenant", "key", "value"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stored_value = self.instance.value if self.instance.pk else None
        if not self.instance.pk:
            self.fields["value"].required = True
            self.fields["value"].help_text = "Write-only: it is never shown again."

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value") or ""
        return value or (self._stored_value or "")


@admin.register(Locker)
class LockerAdmin(admin.ModelAdmin):
    form = LockerForm
    list_display = ["key", "tenant", "masked_value", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["key", "tenant__name"]
    list_select_related = ["tenant"]

    @admin.display(description="value")
    def masked_value(self, obj: Locker) -> str:
        return "••••••••"
