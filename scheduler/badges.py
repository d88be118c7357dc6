"""Status badges: the one rendering of a job's or run's status in every admin page.

A badge is ``<span class="mt-badge mt-badge--<status>">Label</span>``; its colours live in
``scheduler/static/scheduler/metronome.css`` (loaded by every admin page). The label is
always written out, so the status reads the same without colour.
"""

from __future__ import annotations

import re

from django.utils.html import format_html
from django.utils.safestring import SafeString

# Every status a procrastinate job or a TaskRun can have, with its label.
STATUS_LABELS: dict[str, str] = {
    "todo": "To do",
    "doing": "Running",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "aborting": "Aborting",
    "aborted": "Aborted",
    "skipped": "Skipped",
    "paused": "Paused",
    "manual": "Manual",
    # Outcomes of one attempt in a run's attempt log.
    "retry": "Failed, retried",
    "stalled": "Stalled, retried",
}

# The CSS modifier of each status: statuses that read alike share a colour.
_STATUS_KINDS: dict[str, str] = {
    "todo": "todo",
    "doing": "doing",
    "running": "doing",
    "aborting": "doing",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "muted",
    "aborted": "muted",
    "skipped": "muted",
    "paused": "paused",
    "manual": "muted",
    "retry": "failed",
    "stalled": "failed",
}


def status_badge(status: str | None) -> SafeString:
    """The badge of ``status``; an unknown status gets a neutral badge with its own text."""
    key = (status or "").strip().lower()
    css_key = re.sub(r"[^a-z0-9_-]", "", key) or "unknown"
    label = STATUS_LABELS.get(key, key.replace("_", " ").capitalize() or "Unknown")
    kind = _STATUS_KINDS.get(key, "unknown")
    classes = f"mt-badge mt-badge--{kind}" + (f" mt-badge--{css_key}" if css_key != kind else "")
    return format_html('<span class="{}" title="Status: {}">{}</span>', classes, label, label)
