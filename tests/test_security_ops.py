"""What the operator's configuration exposes: error pages, Locker keys, /metrics, HTTPS settings.

Each test plays the attacker or the mistaken operator: it reads a DEBUG error page looking for
the database password and the keys, starts processes with the wrong LOCKER_KEYS, scrapes
/metrics from an address nobody allowed, and runs Django's deployment checks against the
production environment exactly as docs/operations.md documents it.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from tenants import crypto
from tenants.models import Locker

ROOT = Path(__file__).resolve().parent.parent

DB_PASSWORD = "Pg4ssw0rdInTheEnvironment"
MIRROR_PASSWORD = "M1rrorPassw0rdInAnyVariable"
SETTING_PASSWORD = "Br0kerPassw0rdInASetting"
LOCKER_KEY = Fernet.generate_key().decode()
METRICS_TOKEN = "metrics-token-" + "7" * 24
SECRET = "ghp_the_tenant_secret_9999"
KEY_1 = Fernet.generate_key().decode()
KEY_2 = Fernet.generate_key().decode()


# ----------------------------------------------------------------------------- error pages


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("something broke")


def unreachable_database(request: HttpRequest) -> HttpResponse:
    """Connect with a password to a port where nothing listens, as a database outage does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    params = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(closed_port)}
    params["PASSWORD"] = DB_PASSWORD
    params["OPTIONS"] = {**params["OPTIONS"], "connect_timeout": 2}
    DatabaseWrapper(params, alias="unreachable").ensure_connection()
    return HttpResponse("unreachable")


urlpatterns = [
    path("boom", boom),
    path("unreachable-database", unreachable_database),
]


@pytest.fixture
def debug_pages(settings, monkeypatch) -> Client:
    """DEBUG on (./run.sh's default), this module's views, secrets in settings and environment."""
    settings.DEBUG = True
    settings.ROOT_URLCONF = __name__
    settings.LOCKER_KEYS = [LOCKER_KEY]
    settings.METRICS_TOKEN = METRICS_TOKEN
    # A setting whose name says nothing secret, holding a URL with a password.
    settings.REPORT_BROKER = f"amqp://reports:{SETTING_PASSWORD}@broker.internal:5672/"
    monkeypatch.setenv(
        "DATABASE_URL", f"postgres://metronome:{DB_PASSWORD}@db.internal:5432/metronome"
    )
    monkeypatch.setenv("LOCKER_KEYS", LOCKER_KEY)
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    monkeypatch.setenv("PACKAGE_MIRROR", f"https://ci:{MIRROR_PASSWORD}@mirror.example/simple")
    return Client(raise_request_exception=False)


def runserver_get(client: Client, url: str, accept: str) -> str:
    """GET as runserver serves it: its wsgiref handler copies os.environ into every request."""
    environ = {k: v for k, v in os.environ.items() if k.isupper()}
    response = client.get(url, headers={"Accept": accept}, **environ)
    assert response.status_code == 500
    return response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_debug_error_page_shows_no_password_key_or_token(debug_pages, accept):
    page = runserver_get(debug_pages, "/boom", accept)
    assert "something broke" in page and "DATABASE_URL" in page  # the technical page, with META
    for secret in (
        DB_PASSWORD,
        MIRROR_PASSWORD,
        SETTING_PASSWORD,
        LOCKER_KEY,
        METRICS_TOKEN,
        connection.settings_dict["PASSWORD"] or DB_PASSWORD,
    ):
        assert secret not in page
    # Only the password is hidden: the rest of a URL still helps debugging.
    assert "mirror.example" in page and "broker.internal" in page


@pytest.mark.django_db
def test_debug_error_page_of_a_database_outage_hides_the_password(debug_pages):
    page = runserver_get(debug_pages, "/unreachable-database", "text/html")
    assert "OperationalError" in page and "conn_params" in page  # frame variables are shown
    assert DB_PASSWORD not in page


@pytest.mark.parametrize(
    ("text", "password", "kept"),
    [
        ("postgres://app:p%40ss%2Fw0rd@db:5432/x", "p%40ss%2Fw0rd", "@db:5432/x"),
        ("redis://:only-a-password@cache:6379/0", "only-a-password", "@cache:6379/0"),
        ("dsn='mysql://u:raw@pass/word@db/x' rest", "raw@pass/word", "@db/x' rest"),
        ("host=db user=app password=s3cr3t dbname=x", "s3cr3t", "dbname=x"),
        ("host=db password='with space' dbname=x", "with space", "dbname=x"),
        ("https://ghp_TOKEN123@github.com/org", "ghp_TOKEN123", "@github.com/org"),
        ("https://h/api?access_token=tok123&page=2", "tok123", "&page=2"),
        ("https://h/x?page=1&X-Amz-Signature=abcdef99#frag", "abcdef99", "#frag"),
    ],
)
def test_credentials_inside_any_string_are_masked(text, password, kept):
    from config.errors import MetronomeExceptionReporterFilter

    cleansed = MetronomeExceptionReporterFilter().cleanse_setting("SOME_VALUE", [{"v": text}])
    shown = cleansed[0]["v"]
    assert kept in shown and "********" in shown
    for fragment in re.split("[@ ]", password):
        assert fragment not in shown


# ----------------------------------------------------------------------------- Locker keys


def locker_rows() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, tenant_id, key, value, updated_at FROM tenants_locker ORDER BY id"
        )
        return cursor.fetchall()


def locker_key_errors() -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks() if m.id and m.id.startswith("tenants.")]


@pytest.mark.django_db
def test_locker_add_under_wrong_keys_writes_nothing_and_names_the_fix(
    tenant, other_tenant, settings
):
    settings.LOCKER_KEYS = [KEY_1]
    Locker.add("github_token", SECRET, tenant.id)
    before = locker_rows()

    settings.LOCKER_KEYS = [KEY_2]  # the process was started with another key
    for key, tenant_id in (("github_token", tenant.id), ("new_token", other_tenant.id)):
        with pytest.raises(crypto.LockerWrongKeys) as exc:
            Locker.add(key, "replacement-value", tenant_id)
        message = str(exc.value)
        assert "LOCKER_KEYS" in message and "rotate_locker_keys" in message
        assert "<new key>,<old key>" in message
        for secret in (SECRET, KEY_1, KEY_2, "replacement-value"):
            assert secret not in message
    assert locker_rows() == before

    settings.LOCKER_KEYS = [KEY_2, KEY_1]  # rotating: new key first, old key after it
    Locker.add("new_token", "replacement-value", other_tenant.id)
    assert Locker.get("github_token", tenant.id) == SECRET
    assert Locker.get("new_token", other_tenant.id) == "replacement-value"


@pytest.mark.django_db
def test_saving_or_the_admin_form_under_wrong_keys_writes_nothing(tenant, user, client, settings):
    settings.LOCKER_KEYS = [KEY_1]
    stored = Locker.add("github_token", SECRET, tenant.id)
    before = locker_rows()

    settings.LOCKER_KEYS = [KEY_2]
    with pytest.raises(crypto.LockerWrongKeys):
        Locker(tenant=tenant, key="other_token", value="replacement-value").save()
    stored.value = "replacement-value"
    with pytest.raises(crypto.LockerWrongKeys):
        stored.save()

    user.is_staff = True
    user.save()
    client.force_login(user)  # the tenant's owner, in admin
    response = client.post(
        f"/admin/tenants/locker/{stored.pk}/change/",
        {"tenant": tenant.pk, "key": "github_token", "value": "replacement-value"},
    )
    assert response.status_code == 200  # the form again, with the error on the value
    assert "rotate_locker_keys" in response.content.decode()
    assert locker_rows() == before


@pytest.mark.django_db
def test_system_check_reports_wrong_locker_keys(tenant, settings):
    settings.LOCKER_KEYS = [KEY_1]
    Locker.add("github_token", SECRET, tenant.id)
    assert locker_key_errors() == []

    settings.LOCKER_KEYS = [KEY_2]
    [error] = locker_key_errors()
    assert error.id == "tenants.E001" and error.level == checks.ERROR
    assert "LOCKER_KEYS" in error.msg and "rotate_locker_keys" in error.hint
    with pytest.raises(SystemCheckError, match=r"tenants\.E001"):
        call_command("check")

    settings.LOCKER_KEYS = [KEY_2, KEY_1]
    assert locker_key_errors() == []
    call_command("check")


@pytest.mark.django_db
def test_a_value_under_a_lost_key_among_readable_ones_is_a_warning(tenant, settings):
    settings.LOCKER_KEYS = [KEY_1]
    Locker.add("readable", SECRET, tenant.id)
    lost = Locker.add("lost", SECRET, tenant.id)
    lost_token = Fernet(KEY_2).encrypt(SECRET.encode()).decode()
    Locker.objects.filter(pk=lost.pk).update(value=lost_token)
    [warning] = locker_key_errors()
    assert warning.id == "tenants.W001"
    assert f"Locker key 'lost' of tenant {tenant.id}" in warning.msg
    assert "'readable'" not in warning.msg and lost_token not in warning.msg
    Locker.add("another", SECRET, tenant.id)  # the keys are right: writing is allowed


@pytest.mark.django_db
def test_no_lockers_means_nothing_to_judge(tenant, settings):
    settings.LOCKER_KEYS = [KEY_2]
    assert locker_key_errors() == []
    Locker.add("github_token", SECRET, tenant.id)
    assert Locker.get("github_token", tenant.id) == SECRET


@pytest.mark.django_db
def test_missing_locker_keys_in_production_is_a_start_up_error(settings):
    settings.LOCKER_KEYS = []
    settings.LOCKER_DEVELOPMENT_KEY = False
    [error] = locker_key_errors()
    assert error.id == "tenants.E002" and "Fernet.generate_key" in error.msg


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def test_a_worker_started_with_the_wrong_key_refuses_to_start(test_database_url, tenant, settings):
    settings.LOCKER_KEYS = [KEY_1]
    Locker.add("github_token", SECRET, tenant.id)  # committed: transactional database
    env = {**os.environ, "DATABASE_URL": test_database_url, "LOCKER_KEYS": KEY_2}
    try:
        worker = manage(
            "procrastinate", "worker", f"--queues={tenant.queue_name}", env=env, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the worker started with a LOCKER_KEYS that opens no stored value")
    assert worker.returncode != 0
    assert "tenants.E001" in worker.stderr and "rotate_locker_keys" in worker.stderr
    assert KEY_1 not in worker.stderr and SECRET not in worker.stderr

    fixed = manage("check", env={**env, "LOCKER_KEYS": f"{KEY_2},{KEY_1}"})
    assert fixed.returncode == 0, fixed.stderr


# ----------------------------------------------------------------------------- /metrics


@pytest.fixture
def metrics_settings(settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["127.0.0.0/8", "::1"]
    return settings


def scrape(client: Client, remote_addr: str, **headers: str):
    return client.get("/metrics", headers=headers, REMOTE_ADDR=remote_addr)


@pytest.mark.django_db
def test_metrics_refuse_addresses_not_allowed(client, metrics_settings):
    for remote in ("203.0.113.7", "10.0.0.5", "2001:db8::1", "::ffff:203.0.113.7", ""):
        response = scrape(client, remote)
        assert response.status_code == 403, remote
        assert b"METRICS_ALLOWED_IPS" in response.content
        assert b"metronome_" not in response.content
    # A client cannot claim to be the local host through a header.
    spoofed = scrape(client, "203.0.113.7", **{"X-Forwarded-For": "127.0.0.1"})
    assert spoofed.status_code == 403


@pytest.mark.django_db
def test_metrics_serve_loopback_by_default(client, metrics_settings):
    for remote in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
        response = scrape(client, remote)
        assert response.status_code == 200, remote
        assert b"metronome_" in response.content


@pytest.mark.django_db
def test_metrics_serve_the_listed_networks_only(client, metrics_settings):
    metrics_settings.METRICS_ALLOWED_IPS = ["10.20.0.0/16", "2001:db8::/32", "192.0.2.9"]
    allowed = ("10.20.3.4", "2001:db8::5", "192.0.2.9")
    refused = ("10.21.0.1", "192.0.2.10", "127.0.0.1", "2001:db9::1")
    assert [scrape(client, r).status_code for r in allowed] == [200, 200, 200]
    assert [scrape(client, r).status_code for r in refused] == [403, 403, 403, 403]


@pytest.mark.django_db
def test_with_a_token_metrics_need_it_from_every_address(client, metrics_settings):
    metrics_settings.METRICS_TOKEN = METRICS_TOKEN
    for remote in ("203.0.113.7", "127.0.0.1"):
        assert scrape(client, remote).status_code == 401
        assert scrape(client, remote, Authorization="Bearer wrong").status_code == 401
        response = scrape(client, remote, Authorization=f"Bearer {METRICS_TOKEN}")
        assert response.status_code == 200 and b"metronome_" in response.content


# ----------------------------------------------------------------------------- production


def documented_production_environment(database_url: str) -> dict[str, str]:
    """The environment block of docs/operations.md, placeholders filled with fresh values."""
    text = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(r"<!-- production-environment -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "docs/operations.md lost its <!-- production-environment --> ```sh block"
    fill = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": database_url,
        "LOCKER_KEYS": Fernet.generate_key().decode(),
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    environment: dict[str, str] = {}
    for line in match[1].splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        if value.startswith("<"):
            assert name in fill, f"no test value for the placeholder of {name} in the doc block"
            value = fill[name]
        environment[name] = value
    return environment


def test_the_documented_production_environment_passes_the_deploy_checks(test_database_url):
    documented = documented_production_environment(test_database_url)
    assert documented["DEBUG"] == "False"
    # Exactly the documented variables, nothing inherited from this test run.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **documented}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout

    # Behind the documented proxy: http is redirected, https is served with HSTS and
    # secure cookies, and the health check still answers over http.
    probe = (
        "from django.test import Client; c = Client(); h = 'metronome.example.com';"
        "r = c.get('/admin/login/', headers={'Host': h});"
        "print('http', r.status_code, r.get('Location'));"
        "r = c.get('/admin/login/', headers={'Host': h, 'X-Forwarded-Proto': 'https'});"
        "print('https', r.status_code, r.get('Strict-Transport-Security'),"
        " r.cookies['csrftoken']['secure']);"
        "print('healthz', c.get('/healthz', headers={'Host': h}).status_code)"
    )
    shell = manage("shell", "-c", probe, env=env)
    assert shell.returncode == 0, shell.stderr
    lines = shell.stdout.splitlines()
    assert "http 301 https://metronome.example.com/admin/login/" in lines
    assert "https 200 max-age=31536000; includeSubDomains; preload True" in lines
    assert any(re.fullmatch(r"healthz (200|503)", line) for line in lines), lines


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("METRICS_ALLOWED_IPS", "127.0.0.1,10.0.0.0/33", "not an IP address or CIDR network"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto", "HTTP_X_FORWARDED_PROTO,https"),
    ],
)
def test_malformed_security_settings_stop_start_up_with_the_fix(variable, value, message):
    result = manage("check", env={**os.environ, variable: value})
    assert result.returncode != 0
    assert variable in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
