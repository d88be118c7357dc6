"""The ``github`` integration type and its tasks."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.base.egress import EgressPolicy, EgressRefused
from integrations.base.registry import IntegrationType, register
from integrations.base.tasks import IntegrationError, RunContext, integration_task
from integrations.github.client import DEFAULT_BASE_URL, GitHubClient
from integrations.github.models import GithubUser

logger = logging.getLogger(__name__)


@register
class GitHub(IntegrationType):
    """config: ``{"org": "my-org", "base_url": "https://github.example.com/api/v3"}``.

    ``base_url`` other than api.github.com (GitHub Enterprise) must be listed by the operator
    in ``INTEGRATION_ALLOWED_HOSTS``; it is checked by name when the config is validated and
    again, with its resolved addresses, when the worker connects.
    """

    name = "github"
    verbose_name = "GitHub"
    locker_keys = ("github_token",)
    allowed_hosts = ("api.github.com",)
    config_keys = ("org", "base_url")

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        errors = []
        unknown = sorted(set(config) - set(cls.config_keys))
        if unknown:
            errors.append(
                f"Unknown github config keys: {', '.join(unknown)}. "
                f"Accepted: {', '.join(cls.config_keys)}."
            )
        org = config.get("org")
        if org is not None and (not isinstance(org, str) or not org.strip() or "/" in org):
            errors.append("'org' must be a GitHub organisation name, e.g. \"my-company\".")
        base_url = config.get("base_url")
        if base_url is not None:
            parts = urlsplit(base_url) if isinstance(base_url, str) else None
            if not parts or parts.scheme not in ("http", "https") or not parts.netloc:
                errors.append(
                    "'base_url' must be an http(s) URL, e.g. https://api.github.com or "
                    "https://github.example.com/api/v3 for GitHub Enterprise."
                )
            else:
                try:
                    EgressPolicy.for_type(cls).check_url(base_url)
                except EgressRefused as exc:
                    errors.append(f"'base_url' is not allowed: {exc}")
        if errors:
            raise ValidationError(errors)


@integration_task(GitHub)
def get_users(run: RunContext) -> dict[str, int]:
    """Fetch every member of the configured organisation and upsert them."""
    org = run.config.get("org")
    if not org:
        raise IntegrationError(
            f"The github integration of tenant {run.tenant.pk} has no organisation: "
            'set its config to {"org": "<organisation>"}.'
        )
    token = run.secret("github_token")
    base_url = run.config.get("base_url") or DEFAULT_BASE_URL
    with GitHubClient(token, base_url, integration_type=GitHub) as client:
        members = list(client.iter_org_members(org))
    logger.info("fetched %d members of %s from %s", len(members), org, base_url)
    now = timezone.now()
    users = {
        member["id"]: GithubUser(
            tenant=run.tenant,
            integration=run.integration,
            external_id=member["id"],
            login=member.get("login", ""),
            user_type=member.get("type") or "",
            site_admin=bool(member.get("site_admin")),
            avatar_url=member.get("avatar_url") or "",
            html_url=member.get("html_url") or "",
            last_seen_at=now,
        )
        for member in members
    }
    GithubUser.objects.bulk_create(
        users.values(),
        update_conflicts=True,
        unique_fields=["tenant", "external_id"],
        update_fields=[
            "integration",
            "login",
            "user_type",
            "site_admin",
            "avatar_url",
            "html_url",
            "last_seen_at",
        ],
    )
    return {"fetched": len(users)}
