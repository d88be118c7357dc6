"""A small GitHub REST client: pagination by ``Link`` header, rate limits as RetryLater."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from integrations.base.tasks import IntegrationError, RetryLater

DEFAULT_BASE_URL = "https://api.github.com"
PAGE_SIZE = 100


class GitHubClient:
    """Talks to github.com or a GitHub Enterprise server (``base_url``).

    The token is sent only to ``base_url``'s host: a ``Link`` header that points elsewhere
    is refused rather than followed.
    """

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 30.0,
        clock: Any = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._host = urlsplit(self._base).netloc
        self._now = clock or (lambda: dt.datetime.now(dt.UTC))
        self._http = httpx.Client(
            base_url=self._base,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "metronome",
            },
        )

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
            yield from response.json()
            url = response.links.get("next", {}).get("url")
            if url and urlsplit(url).netloc != self._host:
                raise IntegrationError(
                    f"GitHub's next-page link points to another host ({urlsplit(url).netloc}); "
                    "refusing to send the token there."
                )

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
        message = _github_message(response)
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
    try:
        return str(response.json().get("message", "")) or response.reason_phrase
    except ValueError:
        return response.reason_phrase
