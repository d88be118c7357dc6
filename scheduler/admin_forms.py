"""Forms behind the Task admin: choices instead of free text where we know the answers."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest

from integrations.base import registry
from scheduler.models import Task
from scheduler.preview import cron_warnings
from tenants.models import time_zone_names


def task_name_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Task names grouped by integration type; the model checks the pair matches."""
    return [
        (integration_type.verbose_name or name, [(t, t) for t in integration_type.task_names()])
        for name, integration_type in registry.all_types().items()
    ]


def time_zone_choices() -> list[tuple[str, str]]:
    return [("", "— the tenant's time zone —")] + [(z, z) for z in sorted(time_zone_names())]


class TaskForm(forms.ModelForm):
    name = forms.ChoiceField(choices=task_name_choices, help_text="A task of the integration type.")
    timezone = forms.ChoiceField(choices=time_zone_choices, required=False)

    class Meta:
        model = Task
        fields = [
            "integration",
            "tenant",
            "name",
            "cron",
            "timezone",
            "kwargs",
            "enabled",
            "catchup",
            "catchup_window",
            "catchup_max",
            "overlap",
            "max_attempts",
            "retry_backoff",
        ]
        widgets = {
            "cron": forms.TextInput(
                attrs={"class": "vTextField", "data-cron-preview": "1", "autocomplete": "off"}
            ),
        }

    def warn(self, request: HttpRequest) -> None:
        """Show the saved cron's warnings as messages: forms have errors, not warnings."""
        for warning in cron_warnings(self.cleaned_data.get("cron") or ""):
            messages.warning(request, warning)
