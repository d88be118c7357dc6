"""Who may see and edit which tenant's data: the multi-tenancy security boundary.

Superusers see everything. Any other user sees the tenants they are a member of, and
may edit those where their role is owner or admin; viewers read only. Every admin
page, filter, autocomplete, action and dashboard figure goes through these functions.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from tenants.models import Membership, Tenant

EDIT_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
_CACHE_ATTR = "_metronome_tenant_roles"


def tenant_roles(user: Any) -> dict[int, str]:
    """tenant id -> role, cached on the user object for the request."""
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        cached = (
            dict(
                Membership.objects.filter(user_id=user.pk, tenant__is_active=True).values_list(
                    "tenant_id", "role"
                )
            )
            if user.is_authenticated
            else {}
        )
        setattr(user, _CACHE_ATTR, cached)
    return cached


def visible_tenant_ids(user: Any) -> list[int] | None:
    """Tenant ids the user may see; None means all (superuser)."""
    if user.is_superuser:
        return None
    return sorted(tenant_roles(user))


def editable_tenant_ids(user: Any) -> list[int] | None:
    if user.is_superuser:
        return None
    return sorted(t for t, role in tenant_roles(user).items() if role in EDIT_ROLES)


def visible_queues(user: Any) -> list[str] | None:
    """procrastinate queue names of the user's tenants (a tenant's queue is its id)."""
    ids = visible_tenant_ids(user)
    return None if ids is None else [str(i) for i in ids]


def can_view(user: Any, tenant_id: int | None) -> bool:
    return user.is_superuser or (tenant_id is not None and tenant_id in tenant_roles(user))


def can_edit(user: Any, tenant_id: int | None) -> bool:
    return user.is_superuser or (
        tenant_id is not None and tenant_roles(user).get(tenant_id) in EDIT_ROLES
    )


def scope(queryset: QuerySet, user: Any, path: str) -> QuerySet:
    """Filter ``queryset`` to the user's tenants through the ORM ``path`` to Tenant's id."""
    ids = visible_tenant_ids(user)
    return queryset if ids is None else queryset.filter(**{f"{path}__in": ids})


class TenantScopedAdmin(admin.ModelAdmin):
    """ModelAdmin whose rows belong to a tenant reachable through ``tenant_path``.

    Staff members get access from their memberships rather than Django permissions;
    another tenant's object answers 404, and foreign-key choices list only tenants
    (and their objects) the user may edit.
    """

    tenant_path = "tenant"  # ORM path from the model to its Tenant (id)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope(super().get_queryset(request), request.user, self.tenant_path)

    def tenant_id_of(self, obj: Any) -> int | None:
        value = obj
        for part in self.tenant_path.split("__"):
            value = getattr(value, part, None)
            if value is None:
                return None
        return value.pk if isinstance(value, Tenant) else value

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or bool(tenant_roles(request.user))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return can_view(request.user, self.tenant_id_of(obj))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return request.user.is_superuser or bool(editable_tenant_ids(request.user))
        return can_edit(request.user, self.tenant_id_of(obj))

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        related = db_field.related_model
        ids = editable_tenant_ids(request.user)
        if field is not None and ids is not None:
            if related is Tenant:
                field.queryset = field.queryset.filter(pk__in=ids)
            elif any(f.name == "tenant" for f in related._meta.fields):
                field.queryset = field.queryset.filter(tenant_id__in=ids)
        return field

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any, object_id: str):
        # Django redirects to the index with a message; for another tenant's object we
        # answer like for a missing one, without saying whether it exists.
        raise Http404(f"No {opts.verbose_name} with id {object_id} here.")
