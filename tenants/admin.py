"""Admin for tenants and their secrets, scoped to the tenants a user belongs to."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db.models import Model
from django.http import HttpRequest

from tenants import keycheck
from tenants.access import AccessUser, can_edit, can_manage_owners
from tenants.admin_actions import pause_tenants, resume_tenants
from tenants.admin_base import TenantScopedAdmin
from tenants.admin_members import MembershipForm, MembershipFormSet, owner_members
from tenants.crypto import LockerError
from tenants.models import (
    Locker,
    Membership,
    Tenant,
    default_time_zone,
    time_zone_names,
    validate_locker_value,
)

#: Tenant fields that set the tenant's share of shared workers: only owners change them.
FAIR_SHARE_FIELDS = ["weight", "max_running"]


class MembershipInline(admin.TabularInline):
    """Members by username or e-mail (no user picker); role rules in tenants/admin_members.py."""

    model = Membership
    form = MembershipForm
    formset = MembershipFormSet
    fields = ["user", "role"]
    extra = 0

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("user", "tenant")

    def get_formset(
        self, request: HttpRequest, obj: Tenant | None = None, **kwargs: Any
    ) -> type[MembershipFormSet]:
        formset = super().get_formset(request, obj, **kwargs)  # a new class per call
        if not issubclass(formset, MembershipFormSet):
            raise ImproperlyConfigured(
                f"MembershipInline built a {formset.__name__}; its role rules need a "
                "MembershipFormSet (keep formset = MembershipFormSet)."
            )
        formset.acting_user = request.user
        return formset

    def has_add_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return can_edit(request.user, obj.pk if obj is not None else None)

    has_change_permission = has_add_permission
    has_delete_permission = has_add_permission

    def has_view_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return True  # the parent page already checked the tenant


class TenantForm(forms.ModelForm):
    timezone = forms.ChoiceField(
        choices=lambda: [(z, z) for z in sorted(time_zone_names())],
        initial=default_time_zone,
        help_text="IANA time zone in which this tenant's cron expressions are read.",
    )
    weight = forms.IntegerField(
        min_value=1,
        max_value=100,
        initial=1,
        help_text=Tenant._meta.get_field("weight").help_text,
        error_messages={
            "min_value": "Enter a weight from 1 to 100 (%(show_value)s is too low).",
            "max_value": "Enter a weight from 1 to 100 (%(show_value)s is too high).",
            "required": "Enter a weight from 1 to 100 (1 is the usual share).",
            "invalid": "Enter a weight as a whole number from 1 to 100.",
        },
    )
    max_running = forms.IntegerField(
        label="Max running jobs",
        min_value=1,
        max_value=1000,
        required=False,
        help_text=Tenant._meta.get_field("max_running").help_text,
        error_messages={
            "min_value": "Enter a limit from 1 to 1000, or leave it empty for no limit "
            "(%(show_value)s is too low).",
            "max_value": "Enter a limit from 1 to 1000, or leave it empty for no limit "
            "(%(show_value)s is too high).",
            "invalid": "Enter the limit as a whole number from 1 to 1000, or leave it empty "
            "for no limit.",
        },
    )

    #: The user editing the page; set per request by ``TenantAdmin.get_form``.
    acting_user: AccessUser | None = None

    class Meta:
        model = Tenant
        fields = ["name", "email", "owner", "timezone", "is_active", *FAIR_SHARE_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        owner = self.fields.get("owner")
        if owner is None:
            return
        if self.acting_user is not None and self.acting_user.is_superuser:
            owner.help_text = "Any user; they become an owner member if they are not one."
            return
        # Tenant staff choose among the tenant's owners only: no other user is listed or
        # accepted, so the page never names a user from outside the tenant.
        if not isinstance(owner, forms.ModelChoiceField):
            raise ImproperlyConfigured(
                f"TenantForm's owner field is a {type(owner).__name__}; limiting it to the "
                "tenant's owners needs a ModelChoiceField."
            )
        owner.queryset = owner_members(self.instance)
        owner.help_text = "One of the tenant's owner members."
        owner.error_messages["invalid_choice"] = (
            "Choose one of this tenant's owners. To hand the tenant to someone else, make "
            "them an owner in Memberships below, save, then choose them here."
        )


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    form = TenantForm
    tenant_path = "pk"
    list_display = ["name", "id", "email", "owner", "timezone", "is_active", "paused_display"]
    list_filter = ["is_active"]
    search_fields = ["name", "email"]
    list_select_related = ["owner"]
    inlines = [MembershipInline]
    actions = [pause_tenants, resume_tenants]
    readonly_fields = ["paused_at", "pause_note", "paused_until"]

    @admin.display(description="paused", boolean=True)
    def paused_display(self, obj: Tenant) -> bool:
        return obj.is_paused()

    def get_autocomplete_fields(self, request: HttpRequest) -> list[str]:
        # The user autocomplete searches every user of the installation: operators only.
        return ["owner"] if request.user.is_superuser else []

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not can_manage_owners(request.user, obj.pk):
            # Only owners hand over or deactivate a tenant, or change its share of workers.
            fields += ["owner", "is_active", *FAIR_SHARE_FIELDS]
        return fields

    def get_form(
        self, request: HttpRequest, obj: Tenant | None = None, change: bool = False, **kwargs: Any
    ) -> type[TenantForm]:
        form = super().get_form(request, obj, change=change, **kwargs)  # a new class per call
        if not issubclass(form, TenantForm):
            raise ImproperlyConfigured(
                f"TenantAdmin built a {form.__name__}; the owner rules need a TenantForm "
                "(keep form = TenantForm)."
            )
        form.acting_user = request.user
        return form

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        tenant = form.instance
        if any(getattr(formset, "owner_membership_missing", False) for formset in formsets):
            # Before the rows: removing a former owner must find this owner in place.
            Membership.objects.create(
                tenant=tenant, user_id=tenant.owner_id, role=Membership.Role.OWNER
            )
        super().save_related(request, form, formsets, change)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser  # tenants are created by operators

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
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

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() gives back its cleaned_data
        cleaned = self.cleaned_data
        if self.instance.pk and not cleaned.get("value"):
            cleaned.pop("value", None)  # keep the stored secret untouched
        elif cleaned.get("value"):
            try:
                validate_locker_value(cleaned["value"])
                keycheck.ensure_keys_open_stored()
            except ValidationError as exc:
                self.add_error(None, exc)
            except LockerError as exc:
                self.add_error("value", str(exc))
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
