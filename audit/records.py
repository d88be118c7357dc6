"""Writing the audit trail: model signals for the watched models, ``record()`` for the rest.

Saves and deletes of the models in ``WATCHED`` are recorded through signals, so edits from
the shell are recorded as well as those from admin; the acting user comes from a context
variable that ``audit.middleware.AuditUserMiddleware`` sets for each request (empty for the
shell and workers). Bulk updates by the scheduler and workers are not user edits and are
not recorded. A field a model lists in its ``secret_fields`` is never written here: its
change is recorded as "replaced", masked.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db.models import Model
from django.db.models.signals import post_delete, post_save, pre_save

from audit.models import AuditEntry

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # settings.AUTH_USER_MODEL

MASK = "••••••••"
#: The models whose saves and deletes are recorded, by label.
WATCHED = (
    "tenants.Tenant",
    "tenants.Membership",
    "tenants.Locker",
    "integrations.Integration",
    "scheduler.Task",
)
PAUSE_FIELDS = {"paused_at", "pause_note", "paused_until"}
IGNORED_FIELDS = {"updated_at", "created_at"}

#: The user the current request acts as (None: the shell, a worker, anonymous).
acting_user: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "audit_user", default=None
)

_watched: set[type[Model]] = set()

#: Set on a watched instance by ``pre_save`` for ``post_save``: its fields as saved before
#: (None: no row yet), and the names of the secret fields the save replaces.
_BEFORE_ATTR = "_audit_before"
_SECRETS_CHANGED_ATTR = "_audit_secrets_changed"


def connect() -> None:
    """Resolve ``WATCHED`` and connect the signal receivers (from ``AuditConfig.ready``)."""
    _watched.update(apps.get_model(label) for label in WATCHED)
    pre_save.connect(_remember_before, dispatch_uid="audit-before")
    post_save.connect(_record_save, dispatch_uid="audit-save")
    post_delete.connect(_record_delete, dispatch_uid="audit-delete")


def record(
    action: str,
    obj: Model,
    changes: dict[str, Any] | None = None,
    user: User | None = None,
    tenant_id: int | None = None,
) -> AuditEntry:
    """Record ``action`` on ``obj`` by ``user`` (default: the acting user)."""
    user = user or acting_user.get()
    model_name = obj._meta.model_name
    if model_name is None:  # set for every model class Django has prepared
        raise ValueError(f"{type(obj).__name__} is not a prepared model; it has no model_name.")
    return AuditEntry.objects.create(
        user=user,
        username=getattr(user, "username", "") or "",
        tenant_id=tenant_id if tenant_id is not None else _tenant_id(obj),
        action=action,
        model=model_name,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        changes=changes or {},
    )


def _tenant_id(obj: Model) -> int | None:
    if obj._meta.label == "tenants.Tenant":
        return obj.pk
    return getattr(obj, "tenant_id", None)


def _secret_fields(obj: Model) -> frozenset[str]:
    return frozenset(getattr(type(obj), "secret_fields", ()))


def _snapshot(obj: Model) -> dict[str, Any]:
    secret = _secret_fields(obj)
    values = {}
    for field in obj._meta.concrete_fields:
        if field.name in IGNORED_FIELDS or field.primary_key:
            continue
        value = field.value_from_object(obj)
        values[field.name] = MASK if field.name in secret else _jsonable(value)
    return values


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.timedelta | Decimal):
        return str(value)
    return value


def _remember_before(sender: type, instance: Model, **kwargs: Any) -> None:
    if sender not in _watched or instance.pk is None or kwargs.get("raw"):
        return
    before = sender._default_manager.filter(pk=instance.pk).first()
    setattr(instance, _BEFORE_ATTR, _snapshot(before) if before is not None else None)
    if before is not None:
        # A secret's change is recorded as changed, never with either value.
        changed = sorted(
            name
            for name in _secret_fields(instance)
            if getattr(before, name) != getattr(instance, name)
        )
        setattr(instance, _SECRETS_CHANGED_ATTR, changed)


def _record_save(sender: type, instance: Model, created: bool, **kwargs: Any) -> None:
    if sender not in _watched or kwargs.get("raw"):
        return
    after = _snapshot(instance)
    before = getattr(instance, _BEFORE_ATTR, None)
    if created or before is None:
        record(AuditEntry.Action.CREATE, instance, {k: [None, v] for k, v in after.items()})
        return
    changes = {k: [before.get(k), v] for k, v in after.items() if before.get(k) != v}
    for name in getattr(instance, _SECRETS_CHANGED_ATTR, ()):
        changes[name] = [MASK, "(replaced) " + MASK]
    if not changes:
        return
    action = AuditEntry.Action.CHANGE
    if set(changes) <= PAUSE_FIELDS:
        action = AuditEntry.Action.PAUSE if after.get("paused_at") else AuditEntry.Action.RESUME
    record(action, instance, changes)


def _record_delete(sender: type, instance: Model, **kwargs: Any) -> None:
    if sender not in _watched:
        return
    record(
        AuditEntry.Action.DELETE, instance, {k: [v, None] for k, v in _snapshot(instance).items()}
    )
