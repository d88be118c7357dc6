"""What the github integration stores: the users of each tenant's organisation."""

from __future__ import annotations

from django.db import models


class GithubUser(models.Model):
    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="github_users"
    )
    integration = models.ForeignKey(
        "integrations.Integration", on_delete=models.CASCADE, related_name="github_users"
    )
    external_id = models.BigIntegerField(help_text="GitHub's numeric user id.")
    login = models.CharField(max_length=100)
    user_type = models.CharField(max_length=32, blank=True)
    site_admin = models.BooleanField(default=False)
    avatar_url = models.URLField(max_length=500, blank=True)
    html_url = models.URLField(max_length=500, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["tenant", "login"]
        verbose_name = "GitHub user"
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"], name="unique_github_user_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return self.login
