"""Locker values are encrypted at rest, keys rotate, and secrets never leak.

The leak tests look for one known secret everywhere it could escape to: job arguments,
TaskRun errors, log records, admin pages, and finally every row of every table.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

from integrations.models import Integration
from scheduler.models import Task, TaskRun
from scheduler.tick import run_tick
from tenants import crypto
from tenants.models import Locker, Tenant
from tests.fake_github import FakeGitHub, allow, member, serve

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ghp_S3cretValue_that_must_never_leak_4242"
KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


def stored(locker_id: int) -> str:
    """The value column exactly as the database holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM tenants_locker WHERE id = %s", [locker_id])
        return cursor.fetchone()[0]


# ----------------------------------------------------------------------------- at rest


@pytest.mark.django_db
def test_raw_sql_shows_only_a_fernet_token(tenant):
    locker = Locker.add("github_token", SECRET, tenant.id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, value FROM tenants_locker")
        rows = cursor.fetchall()
    assert rows == [("github_token", stored(locker.pk))]
    assert SECRET not in str(rows)
    assert crypto.looks_like_token(rows[0][1])
    assert Locker.get("github_token", tenant.id) == SECRET
    assert Locker.objects.get(pk=locker.pk).reveal() == SECRET
    # The instance Locker.add returns holds the token too, never the plaintext.
    assert locker.value == stored(locker.pk)


@pytest.mark.django_db
def test_same_plaintext_gives_different_tokens(tenant, other_tenant):
    a = Locker.add("k", SECRET, tenant.id)
    b = Locker.add("k", SECRET, other_tenant.id)
    assert stored(a.pk) != stored(b.pk)


@pytest.mark.django_db
def test_saving_an_unchanged_locker_never_reencrypts(tenant):
    locker = Locker.add("github_token", SECRET, tenant.id)
    token = stored(locker.pk)
    loaded = Locker.objects.get(pk=locker.pk)
    loaded.key = "renamed_token"
    loaded.save()
    loaded.save()
    assert stored(locker.pk) == token
    assert Locker.get("renamed_token", tenant.id) == SECRET


@pytest.mark.django_db
def test_plaintext_assigned_to_value_is_encrypted_once_on_save(tenant):
    """What the admin form does: ``locker.value = <plaintext>`` then ``save()``."""
    locker = Locker.objects.get(pk=Locker.add("github_token", "old-value", tenant.id).pk)
    locker.value = SECRET
    locker.save()
    token = stored(locker.pk)
    assert crypto.looks_like_token(token) and locker.value == token
    locker.save()  # a second save of the same instance keeps the same token
    assert stored(locker.pk) == token
    assert locker.reveal() == SECRET

    fresh = Locker(tenant=tenant, key="other", value=SECRET)
    fresh.save()
    assert fresh.reveal() == SECRET and SECRET not in stored(fresh.pk)


@pytest.mark.django_db
def test_a_copied_token_is_not_encrypted_twice(tenant, other_tenant):
    source = Locker.add("github_token", SECRET, tenant.id)
    copy = Locker(tenant=other_tenant, key="github_token", value=source.value)
    copy.save()
    assert Locker.get("github_token", other_tenant.id) == SECRET


@pytest.mark.django_db
def test_add_treats_its_value_as_plaintext_even_if_it_looks_like_a_token(tenant):
    token_like = Locker.add("a", SECRET, tenant.id).value
    Locker.add("b", token_like, tenant.id)
    assert Locker.get("b", tenant.id) == token_like


@pytest.mark.django_db
def test_saving_an_empty_value_is_refused(tenant):
    with pytest.raises(ValidationError, match="non-empty string"):
        Locker(tenant=tenant, key="k", value="").save()
    assert not Locker.objects.exists()


@pytest.mark.django_db
def test_unsaved_plaintext_is_not_revealed_as_if_decrypted(tenant):
    locker = Locker(tenant=tenant, key="k", value=SECRET)
    with pytest.raises(crypto.LockerDecryptionError) as exc:
        locker.reveal()
    assert SECRET not in str(exc.value)


# ----------------------------------------------------------------------------- keys


def encrypt_in_a_fresh_process(secret_key: str) -> str:
    """A token made by a new process started with DEBUG on, no LOCKER_KEYS, ``secret_key``."""
    env = {**os.environ, "SECRET_KEY": secret_key, "DEBUG": "True", "LOCKER_KEYS": ""}
    code = (
        "import django; django.setup(); from tenants import crypto; "
        "print(crypto.fernet().encrypt(b'survives a restart').decode())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_development_key_value_survives_a_restart_with_the_same_secret_key():
    """Values written under the development key stay readable after the processes restart
    (the key is derived, not random), and only with the SECRET_KEY they were written under."""
    token = encrypt_in_a_fresh_process("one-secret-key").encode()
    development = {"LOCKER_KEYS": [], "LOCKER_DEVELOPMENT_KEY": True}
    with override_settings(SECRET_KEY="one-secret-key", **development):
        assert crypto.fernet().decrypt(token) == b"survives a restart"
    other = override_settings(SECRET_KEY="another-secret-key", **development)
    with other, pytest.raises(InvalidToken):
        crypto.fernet().decrypt(token)


@pytest.mark.django_db
def test_without_locker_keys_debug_uses_the_development_key(tenant, settings):
    settings.LOCKER_KEYS = []
    settings.LOCKER_DEVELOPMENT_KEY = True
    locker = Locker.add("k", SECRET, tenant.id)
    dev = Fernet(crypto.development_key(settings.SECRET_KEY))
    assert dev.decrypt(stored(locker.pk).encode()).decode() == SECRET


@pytest.mark.django_db
def test_without_locker_keys_in_production_every_use_fails_loudly(tenant):
    with override_settings(LOCKER_KEYS=[KEY_A], LOCKER_DEVELOPMENT_KEY=False):
        Locker.add("github_token", SECRET, tenant.id)
    with override_settings(LOCKER_KEYS=[], LOCKER_DEVELOPMENT_KEY=False):
        for use in (
            lambda: Locker.add("github_token", SECRET, tenant.id),
            lambda: Locker.get("github_token", tenant.id),
            lambda: Locker(tenant=tenant, key="new", value=SECRET).save(),
        ):
            with pytest.raises(ImproperlyConfigured) as exc:
                use()
            message = str(exc.value)
            assert "LOCKER_KEYS is not set" in message
            assert "Fernet.generate_key().decode()" in message
            assert SECRET not in message
    assert Locker.objects.count() == 1


@pytest.mark.django_db
def test_a_wrong_key_fails_naming_the_locker_never_the_value(tenant):
    with override_settings(LOCKER_KEYS=[KEY_A]):
        locker = Locker.add("github_token", SECRET, tenant.id)
    with override_settings(LOCKER_KEYS=[KEY_B]):
        with pytest.raises(crypto.LockerDecryptionError) as exc:
            Locker.get("github_token", tenant.id)
        with pytest.raises(crypto.LockerDecryptionError):
            Locker.objects.get(pk=locker.pk).reveal()
    message = str(exc.value)
    assert f"Locker key 'github_token' of tenant {tenant.id}" in message
    assert "LOCKER_KEYS" in message
    assert SECRET not in message and stored(locker.pk) not in message
    assert KEY_A not in message and KEY_B not in message


@pytest.mark.django_db
def test_a_malformed_key_is_reported_by_position_not_value(tenant):
    bad = override_settings(LOCKER_KEYS=[KEY_A, "not-a-fernet-key"])
    with bad, pytest.raises(ImproperlyConfigured) as exc:
        Locker.add("k", SECRET, tenant.id)
    assert "Key number 2 of 2 in LOCKER_KEYS" in str(exc.value)
    assert "not-a-fernet-key" not in str(exc.value)


@pytest.mark.django_db
def test_plaintext_stored_before_encryption_fails_loudly_until_encrypted(tenant):
    locker = Locker.add("github_token", SECRET, tenant.id)
    # A row written before values were encrypted.
    Locker.objects.filter(pk=locker.pk).update(value="legacy-plaintext")
    with pytest.raises(crypto.LockerDecryptionError, match="is not encrypted") as exc:
        Locker.get("github_token", tenant.id)
    assert "legacy-plaintext" not in str(exc.value)
    assert "rotate_locker_keys" in str(exc.value)
    # Any save of such a row encrypts it.
    Locker.objects.get(pk=locker.pk).save()
    assert Locker.get("github_token", tenant.id) == "legacy-plaintext"


# ----------------------------------------------------------------------------- rotation


@pytest.mark.django_db
def test_rotate_locker_keys_reencrypts_everything_under_the_current_key(tenant, other_tenant):
    with override_settings(LOCKER_KEYS=[KEY_A]):
        ids = [Locker.add(f"k{i}", f"{SECRET}-{i}", tenant.id).pk for i in range(3)]
        ids.append(Locker.add("k0", SECRET, other_tenant.id).pk)
    Locker.objects.filter(pk=ids[-1]).update(value="legacy-plaintext")
    updated_at = dict(Locker.objects.values_list("pk", "updated_at"))

    with override_settings(LOCKER_KEYS=[KEY_B, KEY_A]):
        out = _call("rotate_locker_keys")
        assert "Re-encrypted 4 Locker value(s)" in out
        assert "3 rotated, 1 plaintext" in out
        assert "2 keys" in out
        tokens = {pk: stored(pk) for pk in ids}
        # Safe to run twice: still readable, same count, nothing encrypted twice.
        assert "Re-encrypted 4 Locker value(s) under the current key (4 rotated, 0" in _call(
            "rotate_locker_keys"
        )
    for pk in ids:
        Fernet(KEY_B).decrypt(stored(pk).encode())  # the current key opens every value
        assert stored(pk) != tokens[pk]
    with override_settings(LOCKER_KEYS=[KEY_B]):  # the old key can go now
        assert [Locker.get(f"k{i}", tenant.id) for i in range(3)] == [
            f"{SECRET}-{i}" for i in range(3)
        ]
        assert Locker.get("k0", other_tenant.id) == "legacy-plaintext"
    assert dict(Locker.objects.values_list("pk", "updated_at")) == updated_at


@pytest.mark.django_db
def test_rotate_changes_nothing_when_a_value_has_no_key(tenant):
    with override_settings(LOCKER_KEYS=[KEY_A]):
        good = Locker.add("good", SECRET, tenant.id)
        lost = Locker.add("lost", SECRET, tenant.id)
    # Written under a key that is gone (Locker.add refuses to write under wrong keys).
    Locker.objects.filter(pk=lost.pk).update(value=Fernet(KEY_C).encrypt(SECRET.encode()).decode())
    before = {good.pk: stored(good.pk), lost.pk: stored(lost.pk)}
    with override_settings(LOCKER_KEYS=[KEY_B, KEY_A]), pytest.raises(CommandError) as exc:
        _call("rotate_locker_keys")
    message = str(exc.value)
    assert f"Locker key 'lost' of tenant {tenant.id}" in message and "'good'" not in message
    assert "nothing was changed" in message and SECRET not in message
    assert {pk: stored(pk) for pk in before} == before


@pytest.mark.django_db
def test_rotate_without_keys_in_production_says_how_to_make_one():
    no_keys = override_settings(LOCKER_KEYS=[], LOCKER_DEVELOPMENT_KEY=False)
    with no_keys, pytest.raises(CommandError, match=r"Fernet\.generate_key"):
        _call("rotate_locker_keys")


def _call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# ----------------------------------------------------------------------------- admin


@pytest.fixture
def superuser_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_admin_pages_show_neither_the_secret_nor_its_token(superuser_client, tenant):
    locker = Locker.add("github_token", SECRET, tenant.id)
    token = stored(locker.pk)
    for url in (
        "/admin/tenants/locker/",
        f"/admin/tenants/locker/{locker.pk}/change/",
        f"/admin/tenants/locker/{locker.pk}/history/",
        "/admin/tenants/locker/add/",
    ):
        response = superuser_client.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        assert SECRET not in page and token not in page, url


@pytest.mark.django_db
def test_admin_keeps_the_stored_token_or_encrypts_a_new_value(superuser_client, tenant):
    locker = Locker.add("github_token", SECRET, tenant.id)
    token = stored(locker.pk)
    url = f"/admin/tenants/locker/{locker.pk}/change/"

    response = superuser_client.post(url, {"tenant": tenant.pk, "key": "github_token"})
    assert response.status_code == 302
    assert stored(locker.pk) == token  # left empty: byte-for-byte the same token

    response = superuser_client.post(
        url, {"tenant": tenant.pk, "key": "github_token", "value": "ghp_replaced"}
    )
    assert response.status_code == 302
    assert "ghp_replaced" not in stored(locker.pk)
    assert Locker.get("github_token", tenant.id) == "ghp_replaced"

    response = superuser_client.post(
        "/admin/tenants/locker/add/", {"tenant": tenant.pk, "key": "new_key", "value": SECRET}
    )
    assert response.status_code == 302
    new = Locker.objects.get(key="new_key")
    assert SECRET not in stored(new.pk) and new.reveal() == SECRET


# ----------------------------------------------------------------------------- leaks


@pytest.fixture
def github(settings):
    fake = FakeGitHub(members={"acme": [member(i, f"user{i}") for i in range(1, 4)]})
    with serve(fake):
        allow(fake, settings)
        yield fake


def github_task(tenant: Tenant, base_url: str) -> Task:
    integration = Integration(
        name="github", tenant_id=tenant.id, config={"org": "acme", "base_url": base_url}
    )
    task = integration.add_task(name="get_users", cron="* * * * *")
    Locker.add("github_token", SECRET, tenant.id)
    return task


@pytest.fixture
def all_logs(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at every level, including loggers that do not propagate to the root."""
    names = [
        "",
        "procrastinate",
        "scheduler",
        "integrations",
        "tenants",
        "metronome",
        "django",
        "httpx",
        "httpcore",
    ]
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        if lg is not logging.getLogger():
            lg.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
            if lg is not logging.getLogger():
                lg.removeHandler(caplog.handler)


def record_text(record: logging.LogRecord) -> str:
    formatter = logging.Formatter()
    parts = [record.getMessage(), str(record.__dict__)]
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


def test_secret_stays_out_of_job_args_run_errors_and_logs(run_worker, tenant, github, all_logs):
    task = github_task(tenant, github.base_url)
    github.replies.append((401, {}, {"message": "Bad credentials"}))

    run_tick(task.next_run_at)

    job = ProcrastinateJob.objects.get()
    assert SECRET not in str(job.args)

    run_worker(queues=[tenant.queue_name])

    # The worker really used the secret: it went to GitHub, and GitHub refused it.
    assert github.requests and github.requests[0][1] == f"Bearer {SECRET}"
    run = TaskRun.objects.get()
    assert run.status == "failed" and "GitHub rejected the token (HTTP 401" in run.error
    assert SECRET not in run.error
    assert SECRET not in str(run.attempt_log)
    assert SECRET not in str(ProcrastinateJob.objects.get().args)

    records = all_logs.records
    # Not vacuous: the worker's own records (start, the failure's line) were captured.
    assert any(r.name.startswith("procrastinate") for r in records)
    assert any("GitHub rejected the token" in r.getMessage() for r in records)
    leaking = [r.name for r in records if SECRET in record_text(r)]
    assert leaking == []


def test_secret_is_in_no_row_of_any_table_after_a_sync(run_worker, tenant, github):
    task = github_task(tenant, github.base_url)
    run_tick(task.next_run_at)
    run_worker(queues=[tenant.queue_name])
    assert TaskRun.objects.get().status == "succeeded"
    github.replies.append((401, {}, {"message": "Bad credentials"}))
    task.refresh_from_db()
    run_tick(task.next_run_at)
    run_worker(queues=[tenant.queue_name])
    assert sorted(TaskRun.objects.values_list("status", flat=True)) == ["failed", "succeeded"]

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        tables = [name for (name,) in cursor.fetchall()]
        assert "tenants_locker" in tables and "procrastinate_jobs" in tables
        leaking = []
        for table in tables:
            cursor.execute(
                f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', [f"%{SECRET}%"]
            )
            if cursor.fetchone()[0]:
                leaking.append(table)
    assert leaking == []
