"""An Integration connects a tenant to an integration type (``github``, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models, transaction
from django.db.models import Value

from integrations.base import registry
from tenants.models import Tenant

if TYPE_CHECKING:
    from scheduler.models import Task


#: Set while bulk_update() writes values it has checked (through update() and CASE).
_values_checked: ContextVar[bool] = ContextVar("values_checked", default=False)


_M = TypeVar("_M", bound=models.Model)


class CheckedQuerySet(models.QuerySet[_M]):
    """A QuerySet whose bulk writes check some fields as ``save()`` does.

    ``update()``, ``bulk_create()`` and ``bulk_update()`` skip ``save()``; here they
    raise the same ValidationError (keyed by field) before writing anything.
    """

    #: field name -> a check raising ValidationError for a bad value
    checked_fields: ClassVar[dict[str, Callable[[Any], object]]] = {}

    @classmethod
    def check_value(cls, name: str, value: Any) -> None:
        if isinstance(value, Value):
            value = value.value
        elif hasattr(value, "resolve_expression"):
            raise ValidationError(
                {name: f"{name} is checked before it is written: give a plain value, not {value}."}
            )
        try:
            cls.checked_fields[name](value)
        except ValidationError as exc:
            raise ValidationError({name: exc.error_list}) from None

    def update(self, **kwargs: Any) -> int:
        if not _values_checked.get():
            for name in self.checked_fields.keys() & kwargs.keys():
                self.check_value(name, kwargs[name])
        return super().update(**kwargs)

    def bulk_create(self, objs: Iterable[_M], *args: Any, **kwargs: Any) -> list[_M]:
        objs = list(objs)
        for obj in objs:
            for name in self.checked_fields:
                self.check_value(name, getattr(obj, name))
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(
        self, objs: Iterable[_M], fields: Iterable[str], *args: Any, **kwargs: Any
    ) -> int:
        objs, fields = list(objs), list(fields)
        for name in self.checked_fields.keys() & set(fields):
            for obj in objs:
                self.check_value(name, getattr(obj, name))
        token = _values_checked.set(True)
        try:
            return super().bulk_update(objs, fields, *args, **kwargs)
        finally:
            _values_checked.reset(token)


class IntegrationQuerySet(CheckedQuerySet["Integration"]):
    checked_fields: ClassVar[dict[str, Callable[[Any], object]]] = {"name": registry.get_type}


class Integration(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="integrations")
    name = models.CharField(
        max_length=64, help_text="Integration type, e.g. github (one per tenant and type)."
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="Settings of this integration type (a JSON object)."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = models.Manager.from_queryset(IntegrationQuerySet)()

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"], name="unique_integration_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.tenant_id and self.tenant})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save, refusing an unknown integration type whatever the caller (ORM included)."""
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "name" in update_fields:
            IntegrationQuerySet.check_value("name", self.name)
        super().save(*args, **kwargs)

    @property
    def type(self) -> type[registry.IntegrationType]:
        return registry.get_type(self.name)

    def clean(self) -> None:
        try:
            integration_type = registry.get_type(self.name)
        except ValidationError as exc:
            raise ValidationError({"name": exc}) from None
        if not isinstance(self.config, dict):
            raise ValidationError({"config": "The config must be a JSON object, e.g. {}."})
        try:
            integration_type.validate_config(self.config)
        except ValidationError as exc:
            raise ValidationError({"config": exc.messages}) from None

    def add_task(self, name: str, cron: str, **options: Any) -> Task:
        """Create a scheduled Task of this integration (saving the integration if new).

        Everything is validated first; on a ValidationError nothing is saved, not even
        a new integration.
        """
        # The Task model is reached through the reverse relation, not imported: the
        # scheduler app depends on this one, never the other way round.
        task_model = self._meta.get_field("tasks").related_model
        if task_model is None:
            raise ImproperlyConfigured(
                "Integration.tasks is not a relation: add_task needs the scheduler app "
                "(its Task model has the ForeignKey named 'tasks' on the integration side)."
            )
        allowed = {
            f.name for f in task_model._meta.concrete_fields if f.editable and not f.primary_key
        } - {"integration", "tenant", "name", "cron", "paused_at", "pause_note", "paused_until"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValidationError(
                f"Unknown option '{unknown[0]}' for add_task; accepted: "
                f"{', '.join(sorted(allowed))}."
            )
        was_new = self.pk is None
        try:
            with transaction.atomic():
                if was_new:
                    self.full_clean()
                    self.save()
                task = task_model(
                    integration=self, tenant_id=self.tenant_id, name=name, cron=cron, **options
                )
                task.full_clean()
                task.save()
        except ValidationError:
            if was_new:
                self.pk = None
                self._state.adding = True
            raise
        # django-stubs types a model reached through _meta as Model; this one is Task.
        return cast("Task", task)
