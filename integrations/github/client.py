"""A small GitHub REST client: pagination by ``Link`` header, rate limits as RetryLater."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from integrations.base import http, redact
from integrations.base.errors import IntegrationError, RetryLater
from integrations.base.registry import IntegrationType, get_type

DEFAULT_BASE_URL = "https://api.github.com"
PAGE_SIZE = 100


class GitHubClient:
    """Talks to github.com or a GitHub Enterprise server (``base_url``).

    Requests go through :func:`integrations.base.http.client`: only to the github type's
    own host or one listed in ``INTEGRATION_ALLOWED_HOSTS``, never to an internal address,
    and redirects only within ``base_url``'s origin. A ``Link`` header that points to
    another origin is refused rather than followed. GitHub's error messages are quoted
    cut short and with the token masked.
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        integration_type: type[IntegrationType] | None = None,
        timeout: float = 30.0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._token = token
        self._base = base_url.rstrip("/")
        self._now = clock or (lambda: dt.datetime.now(dt.UTC))
        self._http = http.client(
            integration_type or get_type("github"),
            self._base,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "metronome",
            },
        )
        self._origin = _origin(httpx.URL(self._base))

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def iter_org_members(self, org: str) -> Iterator[dict[str, Any]]:
        """Every member of ``org``, following pagination to the last page."""
        url: str | None = f"{self._base}/orgs/{org}/members?per_page={PAGE_SIZE}"
        while url:
            response = self._http.get(url)
            self._raise_for_status(response, org)
            yield from self._members(response)
            url = self._next_page(response)

    def _next_page(self, response: httpx.Response) -> str | None:
        """The ``Link: rel="next"`` URL, if it stays on ``base_url``'s origin."""
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        try:
            target: httpx.URL | None = response.url.join(link)
        except httpx.InvalidURL:
            target = None
        if target is None or _origin(target) != self._origin:
            shown = redact.excerpt(target.host if target else link, 100)
            raise IntegrationError(
                f"GitHub's next-page link points to another host ({shown}); "
                "refusing to send the token there."
            )
        return str(target)

    def _members(self, response: httpx.Response) -> list[dict[str, Any]]:
        try:
            members = response.json()
        except ValueError:
            members = None
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise IntegrationError(
                f"GitHub answered HTTP {response.status_code} for {response.request.url.path} "
                "without the JSON list of members it should hold; check 'base_url' points at "
                "the REST API (https://api.github.com, or https://<host>/api/v3 for Enterprise)."
            )
        return members

    def _raise_for_status(self, response: httpx.Response, org: str) -> None:
        status = response.status_code
        if status < 400:
            return
        retry_at = self._rate_limit_reset(response)
        if retry_at is not None:
            raise RetryLater(
                f"GitHub rate limit reached (HTTP {status}); retrying at {retry_at.isoformat()}",
                retry_at,
            )
        # Masked before it is cut: a token across the cut would otherwise survive in part.
        message = redact.excerpt(redact.redact(_github_message(response), [self._token]))
        if status == 401:
            raise IntegrationError(
                f"GitHub rejected the token (HTTP 401: {message}). "
                "Store a valid one with Locker.add('github_token', ...)."
            )
        if status == 404:
            raise IntegrationError(
                f"GitHub organisation '{org}' was not found at {self._base}, or the token "
                f"cannot see it (HTTP 404: {message})."
            )
        raise IntegrationError(f"GitHub answered HTTP {status}: {message}")

    def _rate_limit_reset(self, response: httpx.Response) -> dt.datetime | None:
        """When to retry, for a 403/429 that is a rate limit; None for any other error."""
        if response.status_code not in (403, 429):
            return None
        now = self._now()
        retry_after = response.headers.get("Retry-After")
        if retry_after and retry_after.strip().isdigit():
            return now + dt.timedelta(seconds=int(retry_after))
        remaining = response.headers.get("X-RateLimit-Remaining")
        reset = response.headers.get("X-RateLimit-Reset")
        if remaining == "0" and reset and reset.strip().isdigit():
            return max(now, dt.datetime.fromtimestamp(int(reset), dt.UTC))
        if response.status_code == 429:
            return now + dt.timedelta(seconds=60)
        return None


def _github_message(response: httpx.Response) -> str:
    """GitHub's own words about an error, whole (the caller masks, then cuts them)."""
    try:
        body = response.json()
        message = body.get("message", "") if isinstance(body, dict) else ""
    except ValueError:
        message = ""
    return str(message or response.reason_phrase)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port
