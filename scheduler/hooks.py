"""procrastinate's ON_APP_READY hook (setting ``PROCRASTINATE_ON_APP_READY``)."""

from __future__ import annotations

from procrastinate import App

from scheduler import procrastinate_internals


def on_app_ready(app: App) -> None:
    """Apply what procrastinate has no setting for (see ``procrastinate_internals``)."""
    procrastinate_internals.install(app)
