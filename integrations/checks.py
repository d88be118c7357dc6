"""Start-up check: every integration folder is an installed app.

config/settings.py installs them all by scanning; a project with settings of its own that
builds ``INSTALLED_APPS`` by hand would otherwise lose a type's models, admin and tasks
without a word.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

from integrations.base import registry


@checks.register()
def integration_apps_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.Error]:
    """integrations.E001: an integration folder is missing from ``INSTALLED_APPS``."""
    installed = set(registry.installed_integration_apps())
    return [
        checks.Error(
            f"Integration package {name} is not in INSTALLED_APPS, so its type, models, "
            "admin and tasks are not loaded.",
            hint="Build INSTALLED_APPS as config/settings.py does: "
            "[..., 'integrations', *integration_apps(integration_roots(INTEGRATION_PACKAGES)), "
            "...] (from integrations.base.discovery), or add it to the list.",
            id="integrations.E001",
        )
        for name in registry.integration_apps()
        if name not in installed
    ]
