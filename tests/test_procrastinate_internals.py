"""The procrastinate internals Metronome relies on are checked, and an upgrade that breaks
them stops start-up with a message instead of failing silently."""

from __future__ import annotations

import importlib.metadata

import procrastinate.periodic
import procrastinate.worker
import pytest
from django.core.exceptions import ImproperlyConfigured
from procrastinate import App, testing
from procrastinate.contrib.django import app as django_app

from scheduler import procrastinate_internals as internals


def test_written_for_the_installed_procrastinate():
    """On an upgrade this fails: re-check the module against the new version, then bump."""
    assert importlib.metadata.version("procrastinate") == internals.PINNED_VERSION
    assert internals.problems(django_app) == []


def test_the_django_app_runs_with_both_applied():
    assert procrastinate.periodic.MARGIN == internals.PERIODIC_MARGIN
    assert getattr(django_app, internals._WRAPPED) is True


@pytest.mark.parametrize(
    ("owner", "name", "expected"),
    [
        (procrastinate.periodic, "MARGIN", "procrastinate.periodic.MARGIN"),
        (App, "_worker", "App._worker"),
        (procrastinate.worker.Worker, "run", "Worker.run"),
    ],
)
def test_a_missing_internal_stops_start_up_with_the_fix(monkeypatch, owner, name, expected):
    monkeypatch.delattr(owner, name)
    app = App(connector=testing.InMemoryConnector())
    with pytest.raises(ImproperlyConfigured) as exc:
        internals.install(app)
    message = str(exc.value)
    assert expected in message
    assert "requirements.txt" in message and internals.PINNED_VERSION in message


def test_a_worker_that_stops_setting_an_attribute_is_caught(monkeypatch):
    original = procrastinate.worker.Worker.__init__

    def init_without_queues(self, *args, **kwargs):  # the attribute renamed upstream
        original(self, *args, **kwargs)

    monkeypatch.setattr(procrastinate.worker.Worker, "__init__", init_without_queues)
    assert any("self.queues" in p for p in internals.problems())


def test_install_wraps_every_worker_the_app_builds_once():
    app = App(connector=testing.InMemoryConnector())
    internals.install(app)
    internals.install(app)  # idempotent: ON_APP_READY may run again
    worker = app._worker(queues=["q"], wait=False)
    assert worker.run.__qualname__.startswith("install.")
    assert worker.queues == ["q"]


def test_a_changed_notification_contract_stops_start_up(monkeypatch):
    monkeypatch.setattr(internals, "_schema_text", lambda: "-- another schema")
    found = internals.problems()
    assert any("procrastinate_any_queue_v1" in p for p in found)
    with pytest.raises(ImproperlyConfigured):
        internals.install(App(connector=testing.InMemoryConnector()))
