"""Integrations reach only the hosts the operator allowed, never carry a token elsewhere,
and never show a tenant's secret back in run errors, logs or admin pages.

Each test plays the attacker: a tenant owner pointing ``base_url`` at a server of theirs or
at an internal address, a DNS answer that lands on loopback or changes between check and
connect, a server that redirects elsewhere, a server that echoes the token in its error.
"""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator

import httpx
import pytest
from django.core.exceptions import ValidationError

from integrations.base import http
from integrations.base.egress import EgressPolicy, EgressRefused, forbidden_reason
from integrations.base.registry import IntegrationType, register
from integrations.base.tasks import IntegrationError, RunContext, integration_task
from integrations.models import Integration
from scheduler.logcontext import JobContextFilter
from scheduler.models import Task, TaskRun
from scheduler.runs import run_now
from tenants.models import Locker, Membership
from tests.fake_github import FakeGitHub, allow, member, serve

TOKEN = "ghp-tenant-token-0123456789abcdef"
API_KEY = "leaky-api-key-0123456789"
WEBHOOK_SECRET = "whsec-never-read-abcdef012345"


# ---------------------------------------------------------------- test integration type


@register
class Leaky(IntegrationType):
    """Fails with its secrets in the exception text, as careless integration code does."""

    name = "leaky"
    locker_keys = ("api_key",)


class OpaqueError(Exception):
    """Its text comes from an attribute, not from ``args``: it cannot be cleaned in place."""

    def __init__(self, detail: str) -> None:
        super().__init__("opaque")
        self.detail = detail

    def __str__(self) -> str:
        return f"upstream refused: {self.detail}"


@integration_task(Leaky)
def fail(run: RunContext, kind: str = "plain", log: bool = False) -> None:
    key = run.secret("api_key")
    if log:
        logging.getLogger("integrations.leaky").warning("calling upstream with key %s", key)
    # Not read through run.secret(): masked because it is one of the tenant's Locker values.
    other = Locker.get("webhook_secret", run.tenant.pk)
    if kind == "opaque":
        raise OpaqueError(f"key={key} webhook={other}")
    if kind == "chained":
        try:
            raise RuntimeError(f"upstream refused key={key} (webhook secret {other})")
        except RuntimeError as exc:
            raise IntegrationError("the upstream call failed") from exc
    raise RuntimeError(f"upstream refused key={key} (webhook secret {other})")


def probe_type(*hosts: str) -> type[IntegrationType]:
    """An unregistered integration type whose own hosts are ``hosts``."""
    return type("EgressProbe", (IntegrationType,), {"name": "egress-probe", "allowed_hosts": hosts})


def stand_in_dns(answers: dict[str, list[list[str]]], calls: list[str]):
    """A getaddrinfo stand-in: each lookup of a name pops its next answer (the last repeats)."""

    def resolve(host: str, port: int) -> list[tuple]:
        calls.append(host)
        queue = answers[host]
        ips = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    return resolve


def port_of(fake: FakeGitHub) -> int:
    return int(fake.host.rsplit(":", 1)[1])


# ------------------------------------------------------------ config: forms and shell


@pytest.mark.parametrize(
    ("base_url", "entry"),
    [
        ("https://exfil.example/api/v3", "exfil.example"),
        ("https://exfil.example:8443", "exfil.example:8443"),
        ("https://api.github.com@exfil.example/", "exfil.example"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
        ("http://[fd00:ec2::254]/", "[fd00:ec2::254]:80"),
        ("http://localhost:8000/", "localhost:8000"),
        ("https://10.0.0.1/", "10.0.0.1"),
        ("https://[::ffff:127.0.0.1]/", "[::ffff:127.0.0.1]"),
    ],
)
def test_config_pointing_at_an_unlisted_host_is_rejected(tenant, base_url, entry):
    integration = Integration(
        name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": base_url}
    )
    with pytest.raises(ValidationError) as exc:
        integration.full_clean()
    text = " ".join(exc.value.message_dict["config"])
    assert f"add '{entry}' to INTEGRATION_ALLOWED_HOSTS" in text
    with pytest.raises(ValidationError):
        integration.add_task(name="get_users", cron="* * * * *")
    assert not Integration.objects.exists() and not Task.objects.exists()


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://api.github.com/", "over HTTPS only"),
        ("https://user:pw@api.github.com/", "must not contain a user name or password"),
    ],
)
def test_config_with_plain_http_or_credentials_is_rejected(tenant, base_url, message):
    integration = Integration(
        name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": base_url}
    )
    with pytest.raises(ValidationError) as exc:
        integration.full_clean()
    assert message in " ".join(exc.value.message_dict["config"])


def test_operator_listing_allows_exactly_that_host_and_port(tenant, settings):
    settings.INTEGRATION_ALLOWED_HOSTS = ["ghe.example.com", "10.0.0.5:8443"]

    def clean(base_url: str) -> None:
        Integration(
            name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": base_url}
        ).full_clean()

    clean("https://ghe.example.com/api/v3")
    clean("https://10.0.0.5:8443/api/v3")
    clean("https://api.github.com")
    for other, entry in [
        ("https://ghe.example.com:8443/api/v3", "ghe.example.com:8443"),
        ("http://ghe.example.com/api/v3", "ghe.example.com:80"),
        ("https://10.0.0.5/api/v3", "10.0.0.5"),
        ("https://evil.ghe.example.com/api/v3", "evil.ghe.example.com"),
    ]:
        with pytest.raises(ValidationError) as exc:
            clean(other)
        assert f"add '{entry}' to INTEGRATION_ALLOWED_HOSTS" in str(exc.value)


def integration_form(tenant, base_url: str) -> dict[str, str]:
    return {
        "tenant": str(tenant.pk),
        "name": "github",
        "config": json.dumps({"org": "acme", "base_url": base_url}),
        "enabled": "on",
        "tasks-TOTAL_FORMS": "0",
        "tasks-INITIAL_FORMS": "0",
    }


def test_admin_add_form_rejects_an_unlisted_base_url(admin_client, tenant, settings):
    form = integration_form(tenant, "https://exfil.example:8443/api")
    response = admin_client.post("/admin/integrations/integration/add/", form)
    assert response.status_code == 200
    assert "add &#x27;exfil.example:8443&#x27; to INTEGRATION_ALLOWED_HOSTS" in (
        response.content.decode()
    )
    assert not Integration.objects.exists()

    settings.INTEGRATION_ALLOWED_HOSTS = ["exfil.example:8443"]  # the operator decides
    response = admin_client.post("/admin/integrations/integration/add/", form)
    assert response.status_code == 302
    assert Integration.objects.get().config["base_url"] == "https://exfil.example:8443/api"


def test_tenant_owner_cannot_point_the_integration_at_their_server(client, user, tenant):
    user.is_staff = True
    user.save()
    integration = Integration.objects.create(name="github", tenant=tenant, config={"org": "acme"})
    attacker = FakeGitHub()
    with serve(attacker):
        client.force_login(user)
        response = client.post(
            f"/admin/integrations/integration/{integration.pk}/change/",
            integration_form(tenant, attacker.base_url),
        )
    assert response.status_code == 200
    assert f"add &#x27;{attacker.host}&#x27; to INTEGRATION_ALLOWED_HOSTS" in (
        response.content.decode()
    )
    integration.refresh_from_db()
    assert integration.config == {"org": "acme"}


# ------------------------------------------------------------------- the worker's side


def test_run_now_against_a_withdrawn_host_sends_nothing(run_worker, tenant, settings):
    """The config was saved while the host was listed; the operator then withdrew it."""
    attacker = FakeGitHub(members={"acme": [member(1, "a")]})
    with serve(attacker):
        allow(attacker, settings)
        integration = Integration(
            name="github",
            tenant_id=tenant.id,
            config={"org": "acme", "base_url": attacker.base_url},
        )
        task = integration.add_task(name="get_users", cron="* * * * *", max_attempts=3)
        Locker.add("github_token", TOKEN, tenant.id)
        settings.INTEGRATION_ALLOWED_HOSTS = []
        run = run_now(task)
        run_worker(queues=[tenant.queue_name])
    run.refresh_from_db()
    assert attacker.connections == 0 and attacker.requests == []
    assert run.status == "failed" and run.attempts == 1  # a policy refusal is not retried
    assert f"add '{attacker.host}' to INTEGRATION_ALLOWED_HOSTS" in run.error


def test_own_host_resolving_to_loopback_gets_no_connection(settings):
    fake = FakeGitHub()
    with serve(fake):
        port = port_of(fake)
        kind = probe_type(f"localhost:{port}")
        client = http.client(kind, f"https://localhost:{port}")
        with client, pytest.raises(EgressRefused) as exc:
            client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert "localhost resolves to" in str(exc.value)
        assert "a loopback address" in str(exc.value)
        assert f"add 'localhost:{port}' to INTEGRATION_ALLOWED_HOSTS" in str(exc.value)
        assert fake.connections == 0

        # Listed by the operator, that exact host:port is reached as it resolves.
        settings.INTEGRATION_ALLOWED_HOSTS = [f"localhost:{port}"]
        with http.client(kind, f"http://localhost:{port}") as client:
            assert client.get("/orgs/acme/members").status_code == 404
        assert fake.requests == [("/orgs/acme/members", None)]


def test_dns_answer_with_one_internal_address_is_refused_whole():
    fake = FakeGitHub()
    with serve(fake):
        port = port_of(fake)
        calls: list[str] = []
        policy = EgressPolicy(
            integration="egress-probe",
            own_hosts=frozenset({("mixed.example", port)}),
            operator_hosts=frozenset(),
            resolver=stand_in_dns({"mixed.example": [["140.82.112.6", "127.0.0.1"]]}, calls),
        )
        client = http.policy_client(policy, f"https://mixed.example:{port}")
        with client, pytest.raises(EgressRefused) as exc:
            client.get("/")
    assert "mixed.example resolves to 127.0.0.1, a loopback address" in str(exc.value)
    assert fake.connections == 0


def test_dns_rebinding_cannot_move_the_connection():
    """The name answers a "public" address when checked, loopback on any later lookup.

    No test can bind a public address, so 127.0.0.2 plays the public one (the stand-in
    classifier says so) and 127.0.0.1, on the same port, the internal target.
    """
    checked, internal = FakeGitHub(), FakeGitHub()
    with serve(checked, address="127.0.0.2"):
        port = port_of(checked)
        with serve(internal, port=port):
            calls: list[str] = []
            policy = EgressPolicy(
                integration="egress-probe",
                own_hosts=frozenset({("rebind.example", port)}),
                operator_hosts=frozenset(),
                resolver=stand_in_dns({"rebind.example": [["127.0.0.2"], ["127.0.0.1"]]}, calls),
                classify=lambda ip: None if str(ip) == "127.0.0.2" else forbidden_reason(ip),
            )
            client = http.policy_client(policy, f"https://rebind.example:{port}")
            # TLS with a plain-HTTP test server fails: what matters is where it connected.
            with client, pytest.raises(httpx.HTTPError):
                client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert calls == ["rebind.example"]
    assert checked.connections == 1
    assert internal.connections == 0 and internal.requests == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fd00:ec2::254",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::ffff:100.64.0.1",
        "2002:7f00:1::1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_names_resolving_to_internal_addresses_are_refused(address):
    calls: list[str] = []
    policy = EgressPolicy(
        integration="egress-probe",
        own_hosts=frozenset({("service.example", 443)}),
        operator_hosts=frozenset(),
        resolver=stand_in_dns({"service.example": [[address]]}, calls),
    )
    with pytest.raises(EgressRefused) as exc:
        policy.resolve("service.example", 443)
    assert f"service.example resolves to {address}, a" in str(exc.value)
    assert "add 'service.example' to INTEGRATION_ALLOWED_HOSTS" in str(exc.value)


@pytest.mark.parametrize("address", ["140.82.112.6", "8.8.8.8", "2606:4700:4700::1111"])
def test_names_resolving_to_public_addresses_are_connected_as_resolved(address):
    policy = EgressPolicy(
        integration="egress-probe",
        own_hosts=frozenset({("service.example", 443)}),
        operator_hosts=frozenset(),
        resolver=stand_in_dns({"service.example": [[address]]}, []),
    )
    assert policy.resolve("service.example", 443) == [address]


# -------------------------------------------------------------- secrets echoed back


@pytest.fixture
def all_logs(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of the loggers that do not propagate to the root, at every level."""
    loggers = [logging.getLogger(n) for n in ("procrastinate", "scheduler", "integrations")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
            lg.removeHandler(caplog.handler)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """What the configured console handler (settings.LOGGING) writes, while the test runs."""
    handlers = {
        handler
        for name in ("procrastinate", "scheduler", "integrations")
        for handler in logging.getLogger(name).handlers
        if any(isinstance(f, JobContextFilter) for f in handler.filters)
    }
    assert handlers, "settings.LOGGING installs the console handler with its filter"
    stream = io.StringIO()
    previous = [(handler, handler.setStream(stream)) for handler in handlers]
    try:
        yield stream
    finally:
        for handler, old in previous:
            if old is not None:
                handler.setStream(old)


def full_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), str(record.__dict__)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@pytest.fixture
def viewer(django_user_model, tenant):
    user = django_user_model.objects.create_user(
        "viewer", "viewer@example.com", "pw-for-tests-only", is_staff=True
    )
    Membership.objects.create(tenant=tenant, user=user, role="viewer")
    return user


@pytest.mark.parametrize("status", [401, 500])
def test_token_echoed_by_the_server_shows_nowhere(
    status, run_worker, tenant, viewer, client, settings, all_logs, console
):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((status, {}, lambda auth: {"message": f"Bad request, got {auth}"}))
    with serve(fake):
        allow(fake, settings)
        integration = Integration(
            name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": fake.base_url}
        )
        task = integration.add_task(name="get_users", cron="* * * * *")
        Locker.add("github_token", TOKEN, tenant.id)
        run = run_now(task)
        run_worker(queues=[tenant.queue_name])

    assert fake.requests[0][1] == f"Bearer {TOKEN}"  # the server got it and echoed it
    run.refresh_from_db()
    assert run.status == "failed" and "got Bearer ***" in run.error
    assert TOKEN not in run.error
    assert run.attempt_log and TOKEN not in json.dumps(run.attempt_log)

    records = all_logs.records
    assert any("got Bearer ***" in r.getMessage() for r in records)  # the failure was logged
    assert TOKEN not in "\n".join(full_text(r) for r in records)
    assert "got Bearer ***" in console.getvalue() and TOKEN not in console.getvalue()

    client.force_login(viewer)
    dashboard = client.get("/admin/dashboard/")
    assert dashboard.status_code == 200
    assert "got Bearer ***" in dashboard.content.decode()  # the failure is listed, masked
    assert TOKEN not in dashboard.content.decode()
    task_page = client.get(f"/admin/scheduler/task/{task.pk}/change/")
    assert task_page.status_code == 200 and TOKEN not in task_page.content.decode()


def test_long_remote_error_is_cut_in_the_run(run_worker, tenant, settings):
    fake = FakeGitHub(members={"acme": []})
    fake.replies.append((500, {}, {"message": "A" * 20_000}))
    with serve(fake):
        allow(fake, settings)
        integration = Integration(
            name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": fake.base_url}
        )
        task = integration.add_task(name="get_users", cron="* * * * *")
        Locker.add("github_token", TOKEN, tenant.id)
        run = run_now(task)
        run_worker(queues=[tenant.queue_name])
    run.refresh_from_db()
    assert run.status == "failed" and "more characters cut" in run.error
    assert "A" * 201 not in run.error


@pytest.mark.parametrize("kind", ["plain", "opaque", "chained"])
def test_secrets_in_an_exception_message_are_masked(kind, run_worker, tenant, all_logs, console):
    Locker.add("api_key", API_KEY, tenant.id)
    Locker.add("webhook_secret", WEBHOOK_SECRET, tenant.id)
    task = Integration(name="leaky", tenant_id=tenant.id).add_task(
        name="fail", cron="* * * * *", kwargs={"kind": kind}
    )
    run = run_now(task)
    run_worker(queues=[tenant.queue_name])

    run.refresh_from_db()
    assert run.status == "failed"
    assert "key=*** " in run.error and "Traceback" in run.error
    records = all_logs.records
    # The failure was logged: with its traceback, or (an IntegrationError) in one line.
    assert any(r.exc_info or r.name == "scheduler.job_middleware" for r in records)
    logged = "\n".join(full_text(r) for r in records)
    for secret in (API_KEY, WEBHOOK_SECRET):
        assert secret not in run.error
        assert secret not in json.dumps(run.attempt_log)
        assert secret not in logged
        assert secret not in console.getvalue()
    assert "ended with status: Error" in console.getvalue() or (
        kind == "chained" and "leaky.fail failed: IntegrationError" in console.getvalue()
    )


def test_secret_logged_by_integration_code_is_masked_on_the_console(run_worker, tenant, console):
    Locker.add("api_key", API_KEY, tenant.id)
    Locker.add("webhook_secret", WEBHOOK_SECRET, tenant.id)
    task = Integration(name="leaky", tenant_id=tenant.id).add_task(
        name="fail", cron="* * * * *", kwargs={"log": True}
    )
    run_now(task)
    run_worker(queues=[tenant.queue_name])
    assert TaskRun.objects.get().status == "failed"
    output = console.getvalue()
    assert "calling upstream with key ***" in output
    assert API_KEY not in output
