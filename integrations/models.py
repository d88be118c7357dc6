"""An Integration connects a tenant to an integration type (``github``, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from django.core.exceptions import NON_FIELD_ERRORS, ImproperlyConfigured, ValidationError
from django.db import IntegrityError, models, transaction
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

        The integration and the Task are validated together first, so one error never hides
        another; on a ValidationError nothing is saved, not even a new integration. A Task
        identical to one the integration has (same name, cron, time zone and kwargs) is
        refused, since it would run the same job twice: :meth:`get_or_add_task` returns
        the existing one instead.
        """
        task = self._new_task(name, cron, options)
        was_new = self.pk is None
        errors = self._validate_with(task) if was_new else _errors_of(task.full_clean)
        if errors:
            raise ValidationError(errors)
        try:
            with transaction.atomic():
                if was_new:
                    self.save()
                    task.integration = self
                task.save()
        except BaseException as exc:
            if was_new:
                self.pk = None
                self._state.adding = True
            if isinstance(exc, IntegrityError):
                # Validation passed, then a concurrent save took the same place.
                raced = task.identical_error() or self._already_exists_error(task)
                if raced is not None:
                    raise raced from exc
            raise
        return task

    def get_or_add_task(self, name: str, cron: str, **options: Any) -> tuple[Task, bool]:
        """``(task, created)``: the Task of this integration with this name, cron, time zone
        and kwargs (``timezone=``, ``kwargs=`` in ``options``; default the tenant's zone and
        ``{}``), or a new one made by :meth:`add_task`. Like Django's ``get_or_create``, the
        other options (``enabled``, ``max_attempts``, ...) apply only to a new Task; an
        existing one is returned as it is. Bad input raises ValidationError as in add_task.
        """
        task = self._new_task(name, cron, options)
        existing = task.identical()
        if existing is not None:
            return existing, False
        try:
            return self.add_task(name, cron, **options), True
        except ValidationError:
            existing = task.identical()  # added meanwhile by a concurrent caller
            if existing is not None:
                return existing, False
            raise

    def _new_task(self, name: str, cron: str, options: dict[str, Any]) -> Task:
        """An unsaved Task of this integration; an option that is not a Task setting is a
        ValidationError."""
        # The Task model is reached through the reverse relation, not imported: the
        # scheduler app depends on this one, never the other way round.
        task_model = self._meta.get_field("tasks").related_model
        if task_model is None or isinstance(task_model, str):
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
        task = task_model(
            integration=self, tenant_id=self.tenant_id, name=name, cron=cron, **options
        )
        # django-stubs types a model reached through _meta as Model; this one is Task.
        return cast("Task", task)

    def _validate_with(self, task: Task) -> dict[str, list[ValidationError]]:
        """The errors of this new integration and of its first ``task``, together."""
        errors: dict[str, list[ValidationError]] = {}
        taken = self._already_exists_error(task)
        if taken is not None:
            errors = taken.update_error_dict(errors)
        # The constraint's own message says less than ours: skip it when ours is there.
        errors = _merge(errors, _errors_of(self.full_clean, validate_constraints=taken is None))
        if "name" in errors:
            return errors  # unknown integration type: its task names cannot be checked
        return _merge(errors, _errors_of(task.full_clean, exclude=["integration"]))

    def _already_exists_error(self, task: Task) -> ValidationError | None:
        """When this unsaved integration's tenant already has one of its type (one per
        tenant and type): the error saying how to add ``task`` to that one instead."""
        if self.pk is not None or self.tenant_id is None or not isinstance(self.name, str):
            return None
        existing = type(self).objects.filter(tenant_id=self.tenant_id, name=self.name).first()
        if existing is None:
            return None
        get = f"Integration.objects.get(tenant_id={self.tenant_id}, name={json.dumps(self.name)})"
        call = f"name={json.dumps(task.name)}, cron={json.dumps(task.cron)}"
        config = (
            ""
            if existing.config == self.config
            else f" Its config stays {json.dumps(existing.config)}: change it in admin if needed."
        )
        message = (
            f"Tenant {self.tenant_id} already has a {self.name} integration (id {existing.pk}), "
            "and a tenant has one integration of each type. Add the task to that one: "
            f"{get}.add_task({call}), or .get_or_add_task({call}) to get the task if it "
            f"is there already.{config}"
        )
        return ValidationError({NON_FIELD_ERRORS: [ValidationError(message, code="exists")]})


def _errors_of(check: Callable[..., object], **kwargs: Any) -> dict[str, list[ValidationError]]:
    """The ValidationError that ``check(**kwargs)`` raises, as a dict by field; {} if none."""
    try:
        check(**kwargs)
    except ValidationError as exc:
        return exc.update_error_dict({})
    return {}


def _merge(
    errors: dict[str, list[ValidationError]], more: dict[str, list[ValidationError]]
) -> dict[str, list[ValidationError]]:
    """``errors`` and ``more`` by field, without saying the same thing twice."""
    for field, found in more.items():
        messages = {m for error in errors.get(field, []) for m in error.messages}
        for error in found:
            if not set(error.messages) <= messages:
                errors.setdefault(field, []).append(error)
                messages.update(error.messages)
    return errors
