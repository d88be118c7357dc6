"""The GitHub client's rate limits, errors and redirects, against local HTTP servers."""

from __future__ import annotations

import datetime as dt

import pytest

from integrations.base.tasks import IntegrationError, RetryLater
from integrations.github.client import GitHubClient
from tests.fake_github import FakeGitHub, allow, member, serve

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
def test_rate_limits_become_retry_later(status, headers, expected, settings):
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    fake.replies.append((status, headers, {"message": "rate limited"}))
    with serve(fake), pytest.raises(RetryLater) as exc:
        allow(fake, settings)
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
def test_other_errors_fail_clearly_without_the_token(status, message, settings):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((status, {}, {"message": "Forbidden org"}))
    with serve(fake), pytest.raises(IntegrationError) as exc:
        allow(fake, settings)
        collect(fake)
    assert message in str(exc.value)
    assert "tok" not in str(exc.value).replace("token", "")


def test_next_link_to_another_host_is_refused(settings):
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    fake.replies.append(
        (
            200,
            {"Link": '<http://evil.example/orgs/acme/members?page=2>; rel="next"'},
            [member(1, "a")],
        )
    )
    with serve(fake), pytest.raises(IntegrationError, match="another host"):
        allow(fake, settings)
        collect(fake)
    assert len(fake.requests) == 1


# ------------------------------------------------------------------ hostile servers

TOKEN = "ghp-echoed-0123456789abcdef"


def test_redirect_to_another_server_is_refused_and_never_carries_the_token(settings):
    """Both servers are allowed hosts: still, a redirect may not take the token across."""
    first = FakeGitHub(members={"acme": [member(1, "a")]})
    second = FakeGitHub(members={"acme": [member(2, "b")]})
    with serve(first), serve(second):
        allow(first, settings)
        allow(second, settings)
        first.replies.append(
            (302, {"Location": f"{second.base_url}/orgs/acme/members?per_page=100"}, {})
        )
        client = GitHubClient(TOKEN, first.base_url)
        with client, pytest.raises(IntegrationError) as exc:
            list(client.iter_org_members("acme"))
    assert f"redirecting to {second.base_url}" in str(exc.value)
    assert "same scheme, host and port" in str(exc.value)
    assert first.requests == [("/orgs/acme/members?per_page=100", f"Bearer {TOKEN}")]
    assert second.connections == 0 and second.requests == []


def test_redirect_within_the_same_server_is_followed_with_the_token(settings):
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    with serve(fake):
        allow(fake, settings)
        fake.replies.append((302, {"Location": "/orgs/acme/members?per_page=100&moved=1"}, {}))
        with GitHubClient(TOKEN, fake.base_url) as client:
            logins = [m["login"] for m in client.iter_org_members("acme")]
    assert logins == ["a"]
    assert [auth for _, auth in fake.requests] == [f"Bearer {TOKEN}"] * 2


@pytest.mark.parametrize("status", [401, 500])
def test_error_text_of_a_server_echoing_the_token_is_masked_and_cut(status, settings):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((status, {}, lambda auth: {"message": f"you sent {auth} " + "x" * 5000}))
    with serve(fake), pytest.raises(IntegrationError) as exc:
        allow(fake, settings)
        with GitHubClient(TOKEN, fake.base_url) as client:
            list(client.iter_org_members("acme"))
    text = str(exc.value)
    assert fake.requests[0][1] == f"Bearer {TOKEN}"  # the server did get it, and echoed it
    assert TOKEN not in text and "you sent Bearer ***" in text
    assert "x" * 300 not in text and "more characters cut" in text


@pytest.mark.parametrize("offset", [150, 180, 195, 199])
def test_a_token_echoed_across_the_cut_leaves_no_part_of_itself(offset, settings):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((401, {}, lambda auth: {"message": "x" * offset + f" {auth} tail"}))
    with serve(fake), pytest.raises(IntegrationError) as exc:
        allow(fake, settings)
        with GitHubClient(TOKEN, fake.base_url) as client:
            list(client.iter_org_members("acme"))
    text = str(exc.value)
    assert not any(TOKEN[:n] in text for n in range(6, len(TOKEN) + 1)), text


def test_body_that_is_not_a_member_list_fails_clearly(settings):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((200, {}, "<html>a login page</html>"))
    with serve(fake), pytest.raises(IntegrationError, match="without the JSON list of members"):
        allow(fake, settings)
        collect(fake)


def test_base_url_the_operator_did_not_allow_gets_no_connection():
    fake = FakeGitHub(members={"acme": [member(1, "a")]})
    with serve(fake), pytest.raises(IntegrationError) as exc:
        collect(fake)
    assert f"add '{fake.host}' to INTEGRATION_ALLOWED_HOSTS" in str(exc.value)
    assert fake.connections == 0
