"""Admin actions on tenants, and the pause/resume machinery every Pausable shares.

Each action acts only on rows the user may edit and says how many it changed and how
many it left alone (and why). Task actions (``scheduler.admin_actions``) reuse
``editable``, ``report``, ``pause_selected`` and ``resume_selected``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from tenants.access import editable_tenant_ids


class PauseForm(forms.Form):
    """The intermediate page of the "pause" actions."""

    note = forms.CharField(max_length=500, required=False, help_text="Why (shown on the task).")
    until = forms.DateTimeField(
        required=False,
        help_text="Optional end of the pause, e.g. 2026-12-01 08:00 (server time zone).",
    )


def editable(queryset: QuerySet, request: HttpRequest, tenant_field: str = "tenant_id") -> QuerySet:
    """The rows of ``queryset`` whose tenant (through ``tenant_field``) the user may edit."""
    ids = editable_tenant_ids(request.user)
    return queryset if ids is None else queryset.filter(**{f"{tenant_field}__in": ids})


def report(request: HttpRequest, done: int, verb: str, skipped: int = 0, why: str = "") -> None:
    """One message: how many rows the action changed, how many it skipped and why."""
    text = f"{done} {verb}."
    if skipped:
        text += f" {skipped} skipped: {why}."
    messages.add_message(request, messages.SUCCESS if not skipped else messages.WARNING, text)


def pause_selected(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet, tenant_field: str
) -> TemplateResponse | None:
    """Two steps: the pause form, then the pause itself."""
    allowed = editable(queryset, request, tenant_field)
    form = PauseForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        done, errors = 0, []
        for obj in allowed:
            try:
                obj.pause(form.cleaned_data["note"], until=form.cleaned_data["until"])
                done += 1
            except ValidationError as exc:
                errors.append(" ".join(exc.messages))
        report(
            request,
            done,
            f"{queryset.model._meta.verbose_name_plural} paused",
            len(errors),
            "; ".join(sorted(set(errors))),
        )
        return None
    return TemplateResponse(
        request,
        "admin/tenants/pause_form.html",
        {
            **modeladmin.admin_site.each_context(request),
            "title": f"Pause {queryset.model._meta.verbose_name_plural}",
            "objects": allowed,
            "form": form,
            "action": request.POST.get("action"),
            "opts": modeladmin.model._meta,
        },
    )


def resume_selected(request: HttpRequest, queryset: QuerySet, tenant_field: str) -> None:
    allowed = editable(queryset, request, tenant_field)
    done = 0
    for obj in allowed.filter(paused_at__isnull=False):
        obj.resume()
        done += 1
    report(request, done, f"{queryset.model._meta.verbose_name_plural} resumed")


@admin.action(description="Pause all tasks of selected tenants…")
def pause_tenants(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet
) -> TemplateResponse | None:
    return pause_selected(modeladmin, request, queryset, "pk")


@admin.action(description="Resume all tasks of selected tenants")
def resume_tenants(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet
) -> None:
    resume_selected(request, queryset, "pk")
