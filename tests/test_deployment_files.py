"""docker-compose.yml, judged by what it makes happen (no Docker engine runs here).

Compose's variable substitution is applied the way compose applies it, then each service's
environment is loaded by Django's real settings in a fresh process, each worker command is
run through its shell and read by procrastinate's own argument parser, and the web health
check is run against a server that answers like /healthz.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from threading import Thread

import pytest
import yaml
from procrastinate.contrib.django.management.commands.procrastinate import Command

ROOT = Path(__file__).resolve().parent.parent

#: What an operator puts in .env before `docker compose up` (README, "docker compose").
DOT_ENV = {"SECRET_KEY": "s" * 50, "LOCKER_KEYS": "k" * 43 + "="}

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}")


def substitute(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def replace(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1], match[2], match[3]
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise ValueError(f"compose refuses to start: {argument}")
        return argument if operator == ":-" else ""

    return _VARIABLE.sub(replace, value)


def substituted(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return substitute(node, env)
    if isinstance(node, list):
        return [substituted(item, env) for item in node]
    if isinstance(node, dict):
        return {key: substituted(value, env) for key, value in node.items()}
    return node


def services(env: dict[str, str] | None = None) -> dict[str, dict]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return substituted(raw, DOT_ENV if env is None else env)["services"]


def app_services() -> dict[str, dict]:
    """The services running Metronome's image (all but postgres)."""
    return {name: spec for name, spec in services().items() if spec.get("build") == "."}


def settings_loaded_with(environment: dict[str, str]) -> dict[str, object]:
    """Django's settings as a fresh process loads them from exactly ``environment``."""
    code = (
        "import json, sys; from django.conf import settings; "
        "names = json.loads(sys.argv[1]); "
        "print(json.dumps({n: getattr(settings, n) for n in names if hasattr(settings, n)} "
        "| {'DATABASES': settings.DATABASES}, default=str))"
    )
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "METRONOME_PG_DIR": "/nonexistent",  # nothing but the service's environment
        **environment,
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sorted(environment))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_setting(raw: str, loaded: object) -> object:
    """``raw`` as settings.py parses a variable of the loaded value's type."""
    if isinstance(loaded, bool):
        return raw.lower() in {"true", "on", "ok", "y", "yes", "1"}
    if isinstance(loaded, int):
        return int(raw)
    if isinstance(loaded, list):
        return [item for item in raw.split(",") if item]
    return raw


@pytest.mark.parametrize("name", sorted(app_services()))
def test_every_variable_a_service_gets_reaches_a_setting_or_its_command(name):
    spec = app_services()[name]
    environment = {key: str(value) for key, value in spec["environment"].items()}
    loaded = settings_loaded_with(environment)
    database = loaded["DATABASES"]["default"]
    assert (database["HOST"], database["PORT"], database["NAME"]) == ("postgres", 5432, "metronome")
    command = " ".join(spec["command"])
    for variable, raw in environment.items():
        if variable == "DATABASE_URL":
            continue
        if variable not in loaded:
            assert f"${variable}" in command, f"{name}: no setting or command reads {variable}"
            continue
        if variable == "SECURE_PROXY_SSL_HEADER" and not raw:
            assert loaded[variable] is None
            continue
        assert loaded[variable] == expected_setting(raw, loaded[variable]), variable


@pytest.mark.parametrize("missing", sorted(DOT_ENV))
def test_compose_refuses_to_start_without_the_secrets(missing):
    env = {key: value for key, value in DOT_ENV.items() if key != missing}
    with pytest.raises(ValueError, match=f"set {missing} in .env"):
        services(env)


def worker_arguments(command: list[str], tmp_path: Path, **env: str) -> list[str]:
    """The arguments ``python`` receives when the service's command runs with ``env``."""
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGUMENTS_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "arguments"
    if command[0] == "python":
        command = ["sh", "-c", 'exec "$0" "$@"', *command]
    path = f"{fake.parent}:{os.environ['PATH']}"
    run_env = {"PATH": path, "ARGUMENTS_FILE": str(record), **env}
    subprocess.run(command, env=run_env, check=True, timeout=30)
    arguments = record.read_text().splitlines()
    assert arguments[:2] == ["manage.py", "procrastinate"], arguments
    return arguments[2:]


def procrastinate_options(arguments: list[str]) -> dict:
    return vars(Command().create_parser("manage.py", "procrastinate").parse_args(arguments))


def test_the_scheduler_service_serves_queue_scheduler_only(tmp_path):
    arguments = worker_arguments(services()["scheduler"]["command"], tmp_path)
    options = procrastinate_options(arguments)
    assert (options["command"], options["queues"]) == ("worker", ["scheduler"])


@pytest.mark.parametrize(
    ("worker_queues", "queues"), [("", None), ("1", ["1"]), ("1,2", ["1", "2"])]
)
def test_the_worker_service_serves_worker_queues_or_every_queue(tmp_path, worker_queues, queues):
    spec = services()["worker"]
    arguments = worker_arguments(spec["command"], tmp_path, WORKER_QUEUES=worker_queues)
    options = procrastinate_options(arguments)
    assert options["command"] == "worker"
    assert options.get("queues") == queues  # None: every queue
    assert "ports" not in spec  # scalable: no fixed host port


@contextmanager
def health_endpoint(status: int) -> Iterator[tuple[int, list[str]]]:
    """A server on a free local port answering every GET with ``status``; yields (port, paths)."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], paths
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_web_health_check_asks_healthz_on_the_port_gunicorn_binds(status, healthy):
    web = services()["web"]
    bind = web["command"][web["command"].index("--bind") + 1]
    port = bind.rsplit(":", 1)[1]
    check = web["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "python"
    script = check[-1]
    assert f"127.0.0.1:{port}/" in script, "the health check must ask the port gunicorn binds"
    with health_endpoint(status) as (free_port, paths):
        done = subprocess.run(
            [sys.executable, *check[2:-1], script.replace(f":{port}/", f":{free_port}/")],
            capture_output=True,
            timeout=30,
        )
    assert paths == ["/healthz"]
    assert (done.returncode == 0) is healthy, done.stderr


def test_nothing_starts_before_migrations_and_nothing_waits_on_web():
    for name, spec in app_services().items():
        if name != "migrate":
            assert spec["depends_on"] == {
                "migrate": {"condition": "service_completed_successfully"}
            }, name
    assert services()["migrate"]["command"][-3:] == ["manage.py", "migrate", "--noinput"]


def test_readme_compose_instructions_match_the_file():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up -d postgres" in readme
    assert "--scale worker=" in readme
    for variable in services()["web"]["environment"]:
        assert f"`{variable}`" in readme, f"{variable} missing from README's configuration table"
