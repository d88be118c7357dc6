"""Who may see and edit which tenant's data: the multi-tenancy security boundary.

Superusers see everything. Any other user sees the tenants they are a member of, and
may edit those where their role is owner or admin; viewers read only. Every admin
page, filter, autocomplete, action and dashboard figure goes through these functions.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from django.db.models import Model, QuerySet

from tenants.models import Membership
from tenants.queues import queue_for

EDIT_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
_CACHE_ATTR = "_metronome_tenant_roles"

_M = TypeVar("_M", bound=Model)


class AccessUser(Protocol):
    """What these checks read of a user: ``request.user``, signed in or anonymous."""

    @property
    def pk(self) -> int | None: ...

    @property
    def is_authenticated(self) -> bool: ...

    @property
    def is_superuser(self) -> bool: ...


def tenant_roles(user: AccessUser) -> dict[int, str]:
    """tenant id -> role, cached on the user object for the request."""
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        user_id = user.pk
        cached = (
            dict(
                Membership.objects.filter(user_id=user_id, tenant__is_active=True).values_list(
                    "tenant_id", "role"
                )
            )
            if user.is_authenticated and user_id is not None
            else {}
        )
        setattr(user, _CACHE_ATTR, cached)
    return cached


def visible_tenant_ids(user: AccessUser) -> list[int] | None:
    """Tenant ids the user may see; None means all (superuser)."""
    if user.is_superuser:
        return None
    return sorted(tenant_roles(user))


def editable_tenant_ids(user: AccessUser) -> list[int] | None:
    if user.is_superuser:
        return None
    return sorted(t for t, role in tenant_roles(user).items() if role in EDIT_ROLES)


def visible_queues(user: AccessUser) -> list[str] | None:
    """procrastinate queue names of the user's tenants."""
    ids = visible_tenant_ids(user)
    return None if ids is None else [queue_for(i) for i in ids]


def can_view(user: AccessUser, tenant_id: int | None) -> bool:
    return user.is_superuser or (tenant_id is not None and tenant_id in tenant_roles(user))


def can_edit(user: AccessUser, tenant_id: int | None) -> bool:
    return user.is_superuser or (
        tenant_id is not None and tenant_roles(user).get(tenant_id) in EDIT_ROLES
    )


def scope(queryset: QuerySet[_M], user: AccessUser, path: str) -> QuerySet[_M]:
    """Filter ``queryset`` to the user's tenants through the ORM ``path`` to Tenant's id."""
    ids = visible_tenant_ids(user)
    return queryset if ids is None else queryset.filter(**{f"{path}__in": ids})


# Roles inside a tenant. Owners (and superusers) manage owners, roles and the tenant's
# ``is_active`` flag; admins manage viewers and admins other than themselves; viewers read.


def role_in(user: AccessUser, tenant_id: int | None) -> str | None:
    """The user's role in the (active) tenant, or None when they are not a member."""
    if tenant_id is None:
        return None
    return tenant_roles(user).get(tenant_id)


def can_manage_owners(user: AccessUser, tenant_id: int | None) -> bool:
    """Whether the user may grant, change or remove the owner role and deactivate the tenant."""
    return user.is_superuser or role_in(user, tenant_id) == Membership.Role.OWNER


def grantable_roles(user: AccessUser, tenant_id: int | None) -> tuple[str, ...]:
    """The roles the user may give to (other) members of the tenant; empty for viewers."""
    if can_manage_owners(user, tenant_id):
        return tuple(Membership.Role.values)
    if role_in(user, tenant_id) == Membership.Role.ADMIN:
        return (Membership.Role.ADMIN, Membership.Role.VIEWER)
    return ()
