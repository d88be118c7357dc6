"""The audit trail: every create, change, delete, pause, run-now and job action.

Model saves are caught by signals, so edits from the shell are recorded as well as
those from admin; the acting user comes from a context variable that the admin
middleware sets for each request (empty for the shell and workers). Bulk updates by
the scheduler and workers are not user edits and are not recorded.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from integrations.models import Integration
from scheduler.models import AuditEntry, Task
from tenants.models import Locker, Membership, Tenant

MASK = "••••••••"
AUDITED = (Tenant, Membership, Integration, Task, Locker)
SECRET_FIELDS = {Locker: {"value"}}
PAUSE_FIELDS = {"paused_at", "pause_note", "paused_until"}
IGNORED_FIELDS = {"updated_at", "created_at"}

_current_user: contextvars.ContextVar[Any] = contextvars.ContextVar("audit_user", default=None)


class AuditUserMiddleware:
    """Makes the request's user the author of the audit entries the request causes."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        token = _current_user.set(user if user is not None and user.is_authenticated else None)
        try:
            return self.get_response(request)
        finally:
            _current_user.reset(token)


def record(
    action: str,
    obj: Model,
    changes: dict[str, Any] | None = None,
    user: Any = None,
    tenant_id: int | None = None,
) -> AuditEntry:
    user = user or _current_user.get()
    return AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", "") or "",
        tenant_id=tenant_id if tenant_id is not None else _tenant_id(obj),
        action=action,
        model=obj._meta.model_name,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=changes or {},
    )


def _tenant_id(obj: Model) -> int | None:
    if isinstance(obj, Tenant):
        return obj.pk
    return getattr(obj, "tenant_id", None)


def _snapshot(obj: Model) -> dict[str, Any]:
    secret = SECRET_FIELDS.get(type(obj), set())
    values = {}
    for field in obj._meta.concrete_fields:
        if field.name in IGNORED_FIELDS or field.primary_key:
            continue
        value = field.value_from_object(obj)
        values[field.name] = MASK if field.name in secret else _jsonable(value)
    return values


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


@receiver(pre_save)
def _remember_before(sender: type, instance: Model, **kwargs: Any) -> None:
    if sender not in AUDITED or instance.pk is None or kwargs.get("raw"):
        return
    before = sender._default_manager.filter(pk=instance.pk).first()
    instance._audit_before = _snapshot(before) if before is not None else None
    if isinstance(instance, Locker) and before is not None:
        # A secret's change is recorded as changed, never with either value.
        instance._audit_secret_changed = before.value != instance.value


@receiver(post_save)
def _record_save(sender: type, instance: Model, created: bool, **kwargs: Any) -> None:
    if sender not in AUDITED or kwargs.get("raw"):
        return
    after = _snapshot(instance)
    before = getattr(instance, "_audit_before", None)
    if created or before is None:
        record(AuditEntry.Action.CREATE, instance, {k: [None, v] for k, v in after.items()})
        return
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    if getattr(instance, "_audit_secret_changed", False):
        changes["value"] = [MASK, "(replaced) " + MASK]
    if not changes:
        return
    action = AuditEntry.Action.CHANGE
    if set(changes) <= PAUSE_FIELDS:
        action = AuditEntry.Action.PAUSE if after.get("paused_at") else AuditEntry.Action.RESUME
    record(action, instance, changes)


@receiver(post_delete)
def _record_delete(sender: type, instance: Model, **kwargs: Any) -> None:
    if sender not in AUDITED:
        return
    record(
        AuditEntry.Action.DELETE, instance, {k: [v, None] for k, v in _snapshot(instance).items()}
    )
