from __future__ import annotations

from django import forms
from django.contrib import admin

from integrations.base import registry
from integrations.github.models import GithubUser
from integrations.models import Integration


class IntegrationForm(forms.ModelForm):
    name = forms.ChoiceField(choices=registry.choices, help_text="Integration type.")

    class Meta:
        model = Integration
        fields = ["tenant", "name", "config", "enabled"]


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationForm
    list_display = ["name", "tenant", "enabled", "created_at"]
    list_filter = ["name", "enabled", "tenant"]
    search_fields = ["name", "tenant__name"]
    list_select_related = ["tenant"]


@admin.register(GithubUser)
class GithubUserAdmin(admin.ModelAdmin):
    list_display = ["login", "external_id", "tenant", "site_admin", "last_seen_at"]
    list_filter = ["tenant", "site_admin"]
    search_fields = ["login"]
    list_select_related = ["tenant"]
