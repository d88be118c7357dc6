"""procrastinate's ON_APP_READY hook: worker-wide settings that need Django loaded."""

from __future__ import annotations

from typing import Any

from procrastinate import App


def on_app_ready(app: App) -> None:
    from scheduler import workers
    from scheduler.middleware import record_run

    middleware = app.worker_defaults.setdefault("task_middleware", [])
    if record_run not in middleware:
        middleware.append(record_run)

    create_worker = app._worker

    def _worker(**kwargs: Any):
        return workers.track(create_worker(**kwargs))

    app._worker = _worker  # type: ignore[method-assign]
