"""docker-compose.yml cannot be run here (no Docker engine): check its shape instead."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_four_services_built_from_one_dockerfile():
    services = load_compose()["services"]
    assert set(services) == {"postgres", "migrate", "web", "scheduler", "worker"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("migrate", "web", "scheduler", "worker"):
        assert services[name]["build"] == "."
        assert services[name]["environment"]["DATABASE_URL"].endswith("@postgres:5432/metronome")
    assert (ROOT / "Dockerfile").is_file()


def test_compose_worker_commands_match_the_seed_queues():
    services = load_compose()["services"]
    assert "--queues=scheduler" in services["scheduler"]["command"]
    worker = " ".join(services["worker"]["command"])
    assert "procrastinate worker" in worker and "WORKER_QUEUES" in worker
    assert "ports" not in services["worker"]  # scalable: no fixed host port


def test_web_health_check_is_healthz_and_nothing_waits_on_web():
    services = load_compose()["services"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    for name in ("web", "scheduler", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }


def test_readme_compose_instructions_match_the_file():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose up -d postgres" in readme
    assert "--scale worker=" in readme
    environment = load_compose()["services"]["web"]["environment"]
    for variable in environment:
        assert f"`{variable}`" in readme, f"{variable} missing from README's configuration table"
