"""The two places where Metronome relies on procrastinate internals: no public hook exists.

1. **The periodic deferrer's margin.** procrastinate's periodic deferrer sleeps until each
   tick plus ``procrastinate.periodic.MARGIN`` (0.5 s). The ``scheduler`` job is a periodic
   job, so that half second would be added to the lateness of every run. Waking a little
   early is harmless: the deferrer finds nothing due and sleeps again. There is no setting
   for it, so the module constant is set.
2. **Knowing each worker's queues.** ``procrastinate_workers`` holds a worker's id and
   heartbeat only; the dashboard lists workers with their queues and ``/healthz`` needs to
   know that a worker serving queue ``scheduler`` is alive. There is no worker start/stop
   hook, so ``App._worker`` (which builds every Worker, whoever starts it: ``run.sh``,
   ``manage.py procrastinate worker`` or ``app.run_worker``) is wrapped to wrap each
   Worker's ``run``; ``scheduler.workers`` records the worker once it has registered.

Both are checked by :func:`problems` against the installed procrastinate before anything
is changed: :func:`install` (called from ``PROCRASTINATE_ON_APP_READY``) raises
``ImproperlyConfigured`` when an attribute is gone or has another shape, so an upgrade that
breaks them fails at start-up instead of silently. ``docs/upstream.md`` proposes the
missing hooks to procrastinate. ``PINNED_VERSION`` is the version these were checked
against; a test fails when the installed version differs, as a reminder to re-check.
"""

from __future__ import annotations

import inspect
import re
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
