"""Where Metronome relies on procrastinate internals, because no public hook exists.

1. **procrastinate's "job inserted" notification.** A limited tenant's jobs wait on lock
   slots, and nothing wakes a worker when a slot frees: ``scheduler/sql/lock_slot_wakeup.sql``
   sends procrastinate's own notification when a locked job stops running. Its channels and
   payload are checked against procrastinate's schema (``NOTIFY_CONTRACT``).
2. **The periodic deferrer's margin.** procrastinate's periodic deferrer sleeps until each
   tick plus ``procrastinate.periodic.MARGIN`` (0.5 s). The ``scheduler`` job is a periodic
   job, so that half second would be added to the lateness of every run. Waking a little
   early is harmless: the deferrer finds nothing due and sleeps again. There is no setting
   for it, so the module constant is set.
3. **Knowing each worker's queues.** ``procrastinate_workers`` holds a worker's id and
   heartbeat only; the dashboard lists workers with their queues and ``/healthz`` needs to
   know that a worker serving queue ``scheduler`` is alive. There is no worker start/stop
   hook, so ``App._worker`` (which builds every Worker, whoever starts it: ``run.sh``,
   ``manage.py procrastinate worker`` or ``app.run_worker``) is wrapped to wrap each
   Worker's ``run``; ``scheduler.workers`` records the worker once it has registered.

All are checked by :func:`problems` against the installed procrastinate before anything
is changed: :func:`install` (called from ``PROCRASTINATE_ON_APP_READY``) raises
``ImproperlyConfigured`` when an attribute is gone or has another shape, so an upgrade that
breaks them fails at start-up instead of silently. ``docs/upstream.md`` proposes the
missing hooks to procrastinate. ``PINNED_VERSION`` is the version these were checked
against; a test fails when the installed version differs, as a reminder to re-check.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import procrastinate
import procrastinate.periodic
import procrastinate.worker
from django.core.exceptions import ImproperlyConfigured
from procrastinate import App

PINNED_VERSION = "3.10.0"

#: Seconds the periodic deferrer sleeps past each tick (procrastinate's default: 0.5).
PERIODIC_MARGIN = 0.02

#: Attributes of a running Worker that ``scheduler.workers`` reads.
WORKER_ATTRIBUTES = ("worker_id", "worker_name", "queues")

_WRAPPED = "_metronome_tracks_workers"

#: What ``scheduler/sql/lock_slot_wakeup.sql`` copies from procrastinate's own notification
#: of an inserted job (its channels and payload type), which workers listen for.
NOTIFY_CONTRACT = (
    "pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload)",
    "pg_notify('procrastinate_any_queue_v1', payload)",
    "json_build_object('type', 'job_inserted', 'job_id', NEW.id)",
)


def _schema_text() -> str:
    path = Path(procrastinate.__file__).parent / "sql" / "schema.sql"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def problems(app: App | None = None) -> list[str]:
    """What no longer matches the internals this module relies on (empty when all match)."""
    found = []
    margin = getattr(procrastinate.periodic, "MARGIN", None)
    if not isinstance(margin, int | float):
        found.append("procrastinate.periodic.MARGIN is gone or not a number")
    create = getattr(app if app is not None else App, "_worker", None)
    if not callable(create):
        found.append("procrastinate.App._worker is gone")
    run = getattr(procrastinate.worker.Worker, "run", None)
    if not inspect.iscoroutinefunction(run):
        found.append("procrastinate.worker.Worker.run is gone or not a coroutine function")
    schema = _schema_text()
    for expected in NOTIFY_CONTRACT:
        if expected not in schema:
            found.append(f"procrastinate's schema no longer contains {expected!r}")
    source = inspect.getsource(procrastinate.worker.Worker.__init__)
    for name in WORKER_ATTRIBUTES:
        if not re.search(rf"self\.{name}\s*(:[^=\n]*)?=", source):
            found.append(f"procrastinate.worker.Worker no longer sets self.{name}")
    return found


def install(app: App) -> None:
    """Apply both uses to ``app``; raises ImproperlyConfigured if procrastinate changed."""
    found = problems(app)
    if found:
        raise ImproperlyConfigured(
            f"procrastinate {procrastinate.__version__} no longer has what "
            "scheduler/procrastinate_internals.py relies on (written for "
            f"{PINNED_VERSION}): {'; '.join(found)}. "
            "Pin procrastinate[django] back to that version in requirements.txt, or adapt "
            "that module to the new version."
        )
    procrastinate.periodic.MARGIN = PERIODIC_MARGIN
    if getattr(app, _WRAPPED, False):
        return
    from scheduler import workers

    create_worker = app._worker

    def _worker(**kwargs: Any) -> procrastinate.worker.Worker:
        worker = create_worker(**kwargs)
        original_run = worker.run

        async def run() -> None:
            async with workers.announced(worker):
                await original_run()

        worker.run = run  # type: ignore[method-assign]
        return worker

    app._worker = _worker  # type: ignore[method-assign]
    setattr(app, _WRAPPED, True)
