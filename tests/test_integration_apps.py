"""Integration types are self-contained Django apps, found by their folder.

The end-to-end tests run fresh Django processes against a database of their own, created
and dropped here: one adds a throwaway integration type with a model from a package that
no project file mentions and takes it through makemigrations, migrate, admin and a real
worker; the other builds a database at the migration graph in which GithubUser still
belonged to the ``integrations`` app and migrates it forwards and back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from psycopg import sql

from integrations.base.discovery import integration_apps, integration_roots
from integrations.checks import integration_apps_installed
from integrations.github.models import GithubUser

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------------


def write_package(base: Path, files: dict[str, str]) -> None:
    """Create ``files`` (relative path -> source) under ``base``."""
    for relative, source in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())


def _server_conninfo() -> dict[str, str]:
    s = settings.DATABASES["default"]
    return {
        "host": str(s["HOST"]),
        "port": str(s["PORT"]),
        "user": str(s["USER"]),
        "password": str(s["PASSWORD"]),
    }


@pytest.fixture
def scratch_database_url() -> Iterator[str]:
    """A new empty database on the test server, for subprocesses to migrate; dropped after."""
    server = _server_conninfo()
    prefix = (settings.DATABASES["default"].get("TEST") or {}).get("NAME") or "test_metronome"
    name = f"{prefix}_apps_{uuid.uuid4().hex[:8]}"
    maintenance = {**server, "dbname": settings.DATABASES["default"]["NAME"]}
    with psycopg.connect(**maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield (
            f"postgres://{quote(server['user'], safe='')}:{quote(server['password'], safe='')}"
            f"@{server['host']}:{server['port']}/{name}"
        )
    finally:
        with psycopg.connect(**maintenance, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run_python(args: list[str], env: dict[str, str], timeout: float = 240) -> str:
    """Run ``python ARGS`` in the project directory; fail the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"python {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def run_script(path: Path, source: str, env: dict[str, str]) -> dict:
    """Run ``source`` in a fresh Django process; it prints one JSON object as its last line."""
    path.write_text("import django\n\ndjango.setup()\n" + textwrap.dedent(source))
    return json.loads(run_python([str(path)], env).strip().splitlines()[-1])


def subprocess_env(database_url: str, pythonpath: Path | None = None, **extra: str) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (pythonpath, ROOT) if p)
    env.update(extra)
    return env


# --- discovery ----------------------------------------------------------------------------


def test_github_is_an_installed_app_of_its_own_found_by_its_folder():
    assert "integrations.github" in integration_apps()
    assert "integrations.github" in settings.INSTALLED_APPS
    config = apps.get_app_config("github")
    assert GithubUser._meta.app_config is config
    assert GithubUser._meta.db_table == "github_githubuser"
    assert admin.site.is_registered(GithubUser)


def test_discovery_lists_the_packages_inside_each_root(tmp_path, monkeypatch):
    write_package(
        tmp_path / "apps_scan_root",
        {
            "__init__.py": "",
            "widgets/__init__.py": "",
            "gadgets/__init__.py": "",
            "gadgets/apps.py": "",
            "base/__init__.py": "",
            "migrations/__init__.py": "",
            "_private/__init__.py": "",
            "loose.py": "",
            "not_a_package/readme.txt": "",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    shipped = integration_apps()

    roots = integration_roots([" apps_scan_root ", "", "integrations"])

    assert roots == ["integrations", "apps_scan_root"]
    assert integration_apps(roots) == [
        *shipped,
        "apps_scan_root.gadgets",
        "apps_scan_root.widgets",
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("no_such_integrations_pkg", "cannot be found on the Python path"),
        ("no_such_integrations_pkg.sub", "cannot be found"),
        ("acme-integrations", "is not a Python package name"),
        ("json.decoder", "is a module, not a package"),
    ],
)
def test_a_bad_integration_package_is_refused_with_the_fix(value, says):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        integration_apps(integration_roots([value]))
    message = str(excinfo.value)
    assert repr(value) in message and says in message
    assert "INTEGRATION_PACKAGES=acme_integrations" in message


def test_a_bad_integration_packages_setting_stops_start_up_with_the_fix():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "INTEGRATION_PACKAGES": "no_such_integrations_pkg",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured: Integration package 'no_such_integrations_pkg'" in result.stderr
    assert "INTEGRATION_PACKAGES is a comma list of importable packages" in result.stderr


def test_an_integration_folder_missing_from_installed_apps_fails_the_start_up_check(
    tmp_path, monkeypatch
):
    write_package(tmp_path / "apps_check_root", {"__init__.py": "", "widgets/__init__.py": ""})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert integration_apps_installed() == []

    with override_settings(INTEGRATION_PACKAGES=["apps_check_root"]):
        errors = integration_apps_installed()

    assert [e.id for e in errors] == ["integrations.E001"]
    assert "apps_check_root.widgets is not in INSTALLED_APPS" in errors[0].msg
    assert "integration_apps(integration_roots(INTEGRATION_PACKAGES))" in errors[0].hint


@pytest.mark.django_db
def test_models_and_migrations_agree():
    """``makemigrations --check`` exits non-zero if a model changed without its migration."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


# --- a new integration type is one folder -------------------------------------------------

EXT_ROOT = "metronome_apps_ext"

WIDGETS = {
    "__init__.py": "",
    "widgets/__init__.py": "",
    "widgets/apps.py": """
        from django.apps import AppConfig


        class WidgetsConfig(AppConfig):
            name = "metronome_apps_ext.widgets"
            label = "widgets"
    """,
    "widgets/models.py": """
        from django.db import models


        class Widget(models.Model):
            tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE)
            integration = models.ForeignKey("integrations.Integration", on_delete=models.CASCADE)
            label = models.CharField(max_length=100)

            def __str__(self):
                return self.label
    """,
    "widgets/tasks.py": """
        from django.core.exceptions import ValidationError

        from integrations.base.registry import IntegrationType, register
        from integrations.base.tasks import RunContext, integration_task
        from metronome_apps_ext.widgets.models import Widget


        @register
        class Widgets(IntegrationType):
            name = "widgets"

            @classmethod
            def validate_config(cls, config):
                if not config.get("colour"):
                    raise ValidationError("widgets needs a 'colour', e.g. 'blue'.")


        @integration_task(Widgets)
        def make_widget(run: RunContext, label: str = "widget") -> dict:
            widget = Widget.objects.create(
                tenant=run.tenant, integration=run.integration,
                label=f"{label}-{run.config['colour']}",
            )
            return {"widget": widget.pk}
    """,
    "widgets/admin.py": """
        from django.contrib import admin

        from metronome_apps_ext.widgets.models import Widget
        from tenants.admin_base import TenantScopedAdmin


        @admin.register(Widget)
        class WidgetAdmin(TenantScopedAdmin):
            list_display = ["label", "tenant"]
            search_fields = ["label"]
    """,
}

CREATE_AND_RUN_NOW = """
    import json

    from django.contrib.auth import get_user_model
    from django.core.exceptions import ValidationError

    from integrations.models import Integration
    from scheduler.runs import run_now
    from tenants.models import Tenant

    User = get_user_model()
    owner = User.objects.create_user("owner", is_staff=True)
    outsider = User.objects.create_user("outsider", is_staff=True)
    User.objects.create_superuser("root", "root@example.com", None)
    tenant = Tenant.create(owner, "acme", "ops@acme.example")
    Tenant.create(outsider, "globex", "ops@globex.example")
    try:
        Integration(name="widgets", tenant=tenant, config={}).full_clean()
        refused = ""
    except ValidationError as exc:
        refused = " ".join(exc.messages)
    integration = Integration(name="widgets", tenant=tenant, config={"colour": "blue"})
    task = integration.add_task(name="make_widget", cron="0 0 1 1 *", kwargs={"label": "made"})
    run_now(task)
    print(json.dumps({"queue": tenant.queue_name, "refused": refused}))
"""

INSPECT = """
    import json

    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment

    from metronome_apps_ext.widgets.models import Widget
    from scheduler.models import TaskRun

    setup_test_environment()
    User = get_user_model()
    client = Client()
    client.force_login(User.objects.get(username="root"))
    root_list = client.get("/admin/widgets/widget/")
    client.force_login(User.objects.get(username="outsider"))
    outsider_list = client.get("/admin/widgets/widget/")
    widget = Widget.objects.first()
    outsider_change = client.get(f"/admin/widgets/widget/{widget.pk if widget else 0}/change/")
    print(json.dumps({
        "widgets": [[w.label, w.tenant.name] for w in Widget.objects.all()],
        "runs": [[r.status, r.error] for r in TaskRun.objects.all()],
        "root_list": [root_list.status_code, "made-blue" in root_list.content.decode()],
        "outsider_list": [outsider_list.status_code, "made-blue" in outsider_list.content.decode()],
        "outsider_change": outsider_change.status_code,
    }))
"""


def test_a_new_integration_type_with_a_model_needs_only_its_folder(tmp_path, scratch_database_url):
    """Adds ``widgets`` from a package outside the repository, named only by an env var."""
    write_package(tmp_path / EXT_ROOT, WIDGETS)
    env = subprocess_env(scratch_database_url, tmp_path, INTEGRATION_PACKAGES=EXT_ROOT)

    run_python(["manage.py", "makemigrations", "widgets"], env)
    assert (tmp_path / EXT_ROOT / "widgets" / "migrations" / "0001_initial.py").is_file()
    run_python(["manage.py", "migrate", "--noinput"], env)
    created = run_script(tmp_path / "step_create.py", CREATE_AND_RUN_NOW, env)
    run_python(
        ["manage.py", "procrastinate", "worker", "--one-shot", f"--queues={created['queue']}"],
        env,
    )
    seen = run_script(tmp_path / "step_inspect.py", INSPECT, env)

    assert "widgets needs a 'colour'" in created["refused"]
    assert seen["runs"] == [["succeeded", ""]]
    assert seen["widgets"] == [["made-blue", "acme"]]
    assert seen["root_list"] == [200, True]
    assert seen["outsider_list"] == [200, False]
    assert seen["outsider_change"] == 404


# --- moving GithubUser to the github app keeps existing databases' rows -------------------

MOVE_FORWARDS_AND_BACK = """
    import json

    from django.db import IntegrityError, connection, transaction
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    def executor():
        return MigrationExecutor(connection)

    def table_rows(table):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, login FROM " + connection.ops.quote_name(table) + " ORDER BY id"
            )
            return [list(row) for row in cursor.fetchall()]

    def tables():
        return sorted(t for t in connection.introspection.table_names() if "githubuser" in t)

    def content_type_labels():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT app_label FROM django_content_type WHERE model = 'githubuser'"
            )
            return [row[0] for row in cursor.fetchall()]

    facts = {}
    graph_leaves = executor().loader.graph.leaf_nodes()
    before = [("integrations", "0001_initial")] + [
        node for node in graph_leaves if node[0] not in ("integrations", "github")
    ]
    executor().migrate(before)
    applied = executor().loader.applied_migrations
    facts["old_graph_has_github_app"] = any(app == "github" for app, _ in applied)
    facts["old_graph_has_integrations_0002"] = any(
        node[0] == "integrations" and node[1] != "0001_initial" for node in applied
    )

    old = executor().loader.project_state(before).apps
    user = old.get_model("auth", "User").objects.create(username="owner")
    tenant = old.get_model("tenants", "Tenant").objects.create(
        name="acme", email="ops@acme.example", owner=user
    )
    integration = old.get_model("integrations", "Integration").objects.create(
        tenant=tenant, name="github", config={"org": "acme"}
    )
    content_type = old.get_model("contenttypes", "ContentType").objects.create(
        app_label="integrations", model="githubuser"
    )
    old.get_model("auth", "Permission").objects.create(
        content_type=content_type, codename="view_githubuser", name="Can view GitHub user"
    )
    old_user = old.get_model("integrations", "GithubUser").objects.create(
        tenant=tenant, integration=integration, external_id=583231, login="octocat",
        last_seen_at=timezone.now(),
    )
    facts["before"] = {"tables": tables(), "rows": table_rows("integrations_githubuser")}

    forwards = executor()
    forwards.migrate(forwards.loader.graph.leaf_nodes())

    from django.contrib.auth.models import Permission
    from integrations.github.models import GithubUser
    from tenants.models import Tenant

    moved = GithubUser.objects.get()
    try:
        with transaction.atomic():
            GithubUser.objects.create(
                tenant_id=tenant.pk, integration_id=integration.pk, external_id=583231,
                login="twin", last_seen_at=timezone.now(),
            )
        duplicate = "accepted"
    except IntegrityError:
        duplicate = "refused"
    permission = Permission.objects.select_related("content_type").get(
        codename="view_githubuser"
    )
    facts["after"] = {
        "tables": tables(),
        "row": [moved.pk, moved.login, moved.external_id, moved.integration.config],
        "same_pk": moved.pk == old_user.pk,
        "tenant_relation": Tenant.objects.get().github_users.count(),
        "duplicate": duplicate,
        "permission_content_type": [
            permission.content_type_id == content_type.pk,
            permission.content_type.app_label,
        ],
        "content_types": content_type_labels(),
    }

    executor().migrate(before)
    facts["back"] = {
        "tables": tables(),
        "rows": table_rows("integrations_githubuser"),
        "content_types": content_type_labels(),
    }
    print(json.dumps(facts))
"""


def test_an_existing_database_keeps_its_github_users_through_the_move(
    tmp_path, scratch_database_url
):
    facts = run_script(
        tmp_path / "step_move.py", MOVE_FORWARDS_AND_BACK, subprocess_env(scratch_database_url)
    )

    assert facts["old_graph_has_github_app"] is False
    assert facts["old_graph_has_integrations_0002"] is False
    assert facts["before"]["tables"] == ["integrations_githubuser"]
    old_row = facts["before"]["rows"][0]
    assert facts["after"] == {
        "tables": ["github_githubuser"],
        "row": [old_row[0], "octocat", 583231, {"org": "acme"}],
        "same_pk": True,
        "tenant_relation": 1,
        "duplicate": "refused",
        "permission_content_type": [True, "github"],
        "content_types": ["github"],
    }
    assert facts["back"] == {
        "tables": ["integrations_githubuser"],
        "rows": [old_row],
        "content_types": ["integrations"],
    }
