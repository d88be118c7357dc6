"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from procrastinate.contrib.django import app

PROBE_RESULTS: list[int] = []


@app.task(name="tests.add", queue="tests")
def add(a: int, b: int) -> int:
    """A job for tests: its side effect shows the worker really ran it."""
    PROBE_RESULTS.append(a + b)
    return a + b


@pytest.fixture
def run_worker(transactional_db) -> Callable[..., None]:
    """Run a real procrastinate worker until its queues are empty.

    It uses procrastinate's own psycopg pool (like ``manage.py procrastinate worker``),
    not Django's connection, hence ``transactional_db``: jobs must be committed to be seen.
    """

    def run(queues: Iterable[str] | None = None, **options) -> None:
        options.setdefault("listen_notify", False)
        with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
            worker_app.run_worker(
                queues=list(queues) if queues is not None else None,
                wait=False,
                install_signal_handlers=False,
                **options,
            )

    return run
