"""procrastinate's ON_APP_READY hook: worker-wide settings that need Django loaded."""

from __future__ import annotations

from procrastinate import App


def on_app_ready(app: App) -> None:
    from scheduler.middleware import record_run

    middleware = app.worker_defaults.setdefault("task_middleware", [])
    if record_run not in middleware:
        middleware.append(record_run)
