"""The integration types Metronome knows, declared in each integration app's ``tasks.py``.

An integration type is a Django app inside an integration root (``integrations/<folder>/``,
or a package listed in setting ``INTEGRATION_PACKAGES``; see
:mod:`integrations.base.discovery`, which puts every such folder in ``INSTALLED_APPS``).
Its ``tasks.py`` declares an :class:`IntegrationType` subclass decorated with
:func:`register`, and its procrastinate tasks decorated with
:func:`integrations.base.tasks.integration_task`. Nothing else in the project needs to
change to add one; docs/integrations.md walks through it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError

from integrations.base import discovery

_types: dict[str, type[IntegrationType]] = {}


@dataclass(frozen=True)
class TaskSpec:
    """One task of an integration type: its procrastinate name and the function it runs."""

    procrastinate_name: str
    function: Callable[..., Any]

    def validate_kwargs(self, kwargs: dict[str, Any]) -> None:
        """Raise ValidationError unless the function accepts exactly these keyword arguments."""
        try:
            inspect.signature(self.function).bind(None, **kwargs)
        except TypeError as exc:
            params = [
                p.name
                for p in list(inspect.signature(self.function).parameters.values())[1:]
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            accepted = ", ".join(params) or "none"
            raise ValidationError(
                "These kwargs do not fit task '%(task)s': %(error)s. "
                "Accepted kwargs: %(accepted)s.",
                code="invalid_kwargs",
                params={"task": self.procrastinate_name, "error": exc, "accepted": accepted},
            ) from None


class IntegrationType:
    """What an integration type declares about itself."""

    #: The ``Integration.name`` that selects this type, e.g. ``"github"``.
    name: ClassVar[str]
    verbose_name: ClassVar[str] = ""
    #: Locker keys its tasks read, e.g. ``("github_token",)``.
    locker_keys: ClassVar[tuple[str, ...]] = ()
    #: Hosts its HTTP clients may reach over HTTPS, ``"host"`` (port 443) or ``"host:port"``,
    #: e.g. ``("api.github.com",)``; the operator adds others with setting
    #: ``INTEGRATION_ALLOWED_HOSTS`` (see ``integrations/base/egress.py``).
    allowed_hosts: ClassVar[tuple[str, ...]] = ()
    #: Task name -> its spec; filled by ``integration_task``.
    tasks: ClassVar[dict[str, TaskSpec]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tasks = {}

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        """Raise ValidationError when ``config`` is not acceptable for this type."""

    @classmethod
    def task_names(cls) -> list[str]:
        return sorted(cls.tasks)

    @classmethod
    def get_task(cls, task_name: str) -> TaskSpec:
        try:
            return cls.tasks[task_name]
        except KeyError:
            known = ", ".join(cls.task_names()) or "none"
            raise ValidationError(
                "Integration type '%(type)s' has no task '%(task)s'. Its tasks: %(known)s.",
                code="unknown_task",
                params={"type": cls.name, "task": task_name, "known": known},
            ) from None


def register(cls: type[IntegrationType]) -> type[IntegrationType]:
    if cls.name in _types and _types[cls.name] is not cls:
        raise RuntimeError(f"two integration types are named {cls.name!r}")
    _types[cls.name] = cls
    return cls


def get_type(name: str) -> type[IntegrationType]:
    """The registered type, or a ValidationError that lists the known ones."""
    autodiscover()
    try:
        return _types[name]
    except KeyError:
        known = ", ".join(sorted(_types)) or "none"
        raise ValidationError(
            "Unknown integration type '%(name)s'. Known types: %(known)s.",
            code="unknown_integration",
            params={"name": name, "known": known},
        ) from None


def all_types() -> dict[str, type[IntegrationType]]:
    autodiscover()
    return dict(sorted(_types.items()))


def choices() -> list[tuple[str, str]]:
    return [(name, t.verbose_name or name) for name, t in all_types().items()]


_discovered = False


def autodiscover() -> None:
    """Import the ``tasks`` module of every installed integration app, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for app_name in installed_integration_apps():
        try:
            importlib.import_module(f"{app_name}.tasks")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app_name}.tasks":
                raise


def integration_apps() -> list[str]:
    """The integration apps in ``integrations/`` and the ``INTEGRATION_PACKAGES`` roots."""
    roots = discovery.integration_roots(getattr(settings, "INTEGRATION_PACKAGES", ()))
    return discovery.integration_apps(roots)


def installed_integration_apps() -> list[str]:
    """:func:`integration_apps` that are in ``INSTALLED_APPS`` (all of them, see checks)."""
    return [name for name in integration_apps() if apps.is_installed(name)]
