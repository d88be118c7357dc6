"""procrastinate's ON_APP_READY hook: worker-wide settings that need Django loaded."""

from __future__ import annotations

from typing import Any

from procrastinate import App


def on_app_ready(app: App) -> None:
    import procrastinate.periodic

    from scheduler import workers

    # procrastinate's periodic deferrer wakes 0.5 s after each tick; the scheduler job is
    # a periodic job, so that half second was added to every run's lateness. Waking a
    # little early is harmless: the deferrer finds nothing due and sleeps again.
    procrastinate.periodic.MARGIN = 0.02
    from scheduler.middleware import record_run

    middleware = app.worker_defaults.setdefault("task_middleware", [])
    if record_run not in middleware:
        middleware.append(record_run)

    create_worker = app._worker

    def _worker(**kwargs: Any):
        return workers.track(create_worker(**kwargs))

    app._worker = _worker  # type: ignore[method-assign]
