"""The exceptions integration code raises to tell the scheduler what to do with a run.

Kept free of Django and procrastinate imports so that low-level helpers (the egress
policy, the HTTP client, redaction) can raise them without loading the task machinery.
``integrations.base.tasks`` re-exports them.
"""

from __future__ import annotations

import datetime as dt

import httpx


class IntegrationError(Exception):
    """A failure the user can act on (bad config, missing secret); its message says how.

    Not retried: waiting will not fix it.
    """


class RetryLater(Exception):
    """The remote service asked us to come back later (rate limit): retry, do not fail."""

    def __init__(self, message: str, retry_at: dt.datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class RemoteUnavailable(httpx.TransportError):
    """The remote service could not be reached or did not answer in time (connection
    refused, DNS failure, timeout): retried as the Task's retry policy says, and logged as
    one line, since there is no bug to trace. An ``httpx.TransportError``, so integration
    code that catches httpx's errors still does."""
