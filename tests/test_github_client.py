"""The GitHub client's rate-limit and error handling, against a local HTTP server."""

from __future__ import annotations

import datetime as dt

import pytest

from integrations.base.tasks import IntegrationError, RetryLater
from integrations.github.client import GitHubClient
from tests.fake_github import FakeGitHub, member, serve

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def collect(fake: FakeGitHub, org: str = "acme") -> list[dict]:
    with GitHubClient("tok", fake.base_url, clock=lambda: NOW) as client:
        return list(client.iter_org_members(org))


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"Retry-After": "30"}, NOW + dt.timedelta(seconds=30)),
        (403, {"Retry-After": "5"}, NOW + dt.timedelta(seconds=5)),
        (
            403,
            {
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int((NOW + dt.timedelta(minutes=7)).timestamp())),
            },
            NOW + dt.timedelta(minutes=7),
        ),
        (429, {}, NOW + dt.timedelta(seconds=60)),
    ],
)
def test_rate_limits_become_retry_later(status, headers, expected):
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    fake.replies.append((status, headers, {"message": "rate limited"}))
    with serve(fake), pytest.raises(RetryLater) as exc:
        collect(fake)
    assert exc.value.retry_at == expected


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "GitHub rejected the token"),
        (403, "GitHub answered HTTP 403: Forbidden org"),
        (500, "GitHub answered HTTP 500"),
    ],
)
def test_other_errors_fail_clearly_without_the_token(status, message):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((status, {}, {"message": "Forbidden org"}))
    with serve(fake), pytest.raises(IntegrationError) as exc:
        collect(fake)
    assert message in str(exc.value)
    assert "tok" not in str(exc.value).replace("token", "")


def test_next_link_to_another_host_is_refused():
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    fake.replies.append(
        (
            200,
            {"Link": '<http://evil.example/orgs/acme/members?page=2>; rel="next"'},
            [member(1, "a")],
        )
    )
    with serve(fake), pytest.raises(IntegrationError, match="another host"):
        collect(fake)
    assert len(fake.requests) == 1
