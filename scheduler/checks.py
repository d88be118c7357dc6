"""System checks: ``scheduler.E001``, the TaskRun trigger is installed and current (below);
``scheduler.E005`` and ``E006``, the tick's chunk size and threads are sane (at the end).

TaskRun rows follow their jobs' status through a trigger on ``procrastinate_jobs`` (see
:mod:`scheduler.run_records`). Without it, or with an outdated copy, runs stay ``todo``
for ever and every overlap decision goes wrong, silently; so ``runserver``, workers and
``manage.py check`` refuse to start, naming the fix. Like ``tenants.E001`` it reads the
database even without ``--database``: a worker's start-up passes none.

It says nothing while a migration is pending (``migrate`` installs the trigger, and
``/healthz`` reports pending migrations) or when the database cannot be read (other checks
and commands report that). ``manage.py migrate`` reinstalls the trigger from the file
whenever it differs (the ``post_migrate`` receiver below), so migrate is always the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, register
from django.db import DatabaseError, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.models.signals import post_migrate
from django.dispatch import receiver

from scheduler import run_records

#: The tag of Metronome's checks that read the database at every start-up.
TAG = "metronome"

FIX = (
    "Run `python manage.py migrate --skip-checks`: migrate installs the trigger and its "
    f"function from {run_records.TRIGGER_PATH} (the flag, because this error stops migrate "
    "too)."
)


def pending_migrations(using: str) -> bool:
    """Whether any migration on disk is not recorded as applied in that database."""
    loader = MigrationLoader(connections[using], ignore_no_migrations=True)
    return bool(set(loader.graph.nodes) - set(loader.applied_migrations or ()))


@register(TAG)
def check_taskrun_trigger(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``scheduler.E001``: the trigger or its function is missing, disabled or outdated."""
    if app_configs is not None and not any(c.label == "scheduler" for c in app_configs):
        return []
    messages: list[CheckMessage] = []
    for alias in databases if databases is not None else ["default"]:
        try:
            with transaction.atomic(using=alias):
                if pending_migrations(alias):
                    continue
                problems = run_records.trigger_problems(alias)
        except DatabaseError:
            continue
        if problems:
            messages.append(
                Error(
                    "TaskRun rows do not follow their jobs' status: " + "; ".join(problems) + ".",
                    hint=FIX,
                    obj=f"database {alias!r}",
                    id="scheduler.E001",
                )
            )
    return messages


@receiver(post_migrate, dispatch_uid="scheduler.sync_trigger")
def sync_trigger_after_migrate(sender: AppConfig, using: str = "default", **kwargs: Any) -> None:
    """After ``migrate`` (and ``flush``), reinstall the trigger if it is not as in the file."""
    if sender.label == "scheduler":
        run_records.sync_trigger(using)


#: The largest chunk a tick may take: beyond it one transaction holds too many row locks
#: and too much memory for the herd's first jobs to start soon.
MAX_CHUNK_SIZE = 50_000
#: The most threads a tick may use: each holds a database connection during a herd.
MAX_TICK_THREADS = 8


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@register()
def check_tick_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[Error]:
    """``scheduler.E005``: ``SCHEDULER_CHUNK_SIZE`` is a whole number of due Tasks per chunk;
    ``scheduler.E006``: ``SCHEDULER_TICK_THREADS`` a small whole number of threads."""
    from django.conf import settings

    errors = []
    size = settings.SCHEDULER_CHUNK_SIZE
    if not _whole(size, 1, MAX_CHUNK_SIZE):
        errors.append(
            Error(
                f"SCHEDULER_CHUNK_SIZE is {size!r}: it must be a whole number of due Tasks "
                f"from 1 to {MAX_CHUNK_SIZE:,}.",
                hint="e.g. SCHEDULER_CHUNK_SIZE=1000 (the default).",
                id="scheduler.E005",
            )
        )
    threads = settings.SCHEDULER_TICK_THREADS
    if not _whole(threads, 1, MAX_TICK_THREADS):
        errors.append(
            Error(
                f"SCHEDULER_TICK_THREADS is {threads!r}: it must be a whole number of threads "
                f"from 1 to {MAX_TICK_THREADS} (1: no threads; each thread holds a database "
                "connection during a herd).",
                hint="e.g. SCHEDULER_TICK_THREADS=2 (the default).",
                id="scheduler.E006",
            )
        )
    return errors
