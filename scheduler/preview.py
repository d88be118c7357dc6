"""A cron expression explained for people: plain language, the next run times, warnings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cron_descriptor import Options, get_description
from django.core.exceptions import ValidationError
from django.utils import timezone

from scheduler.cron import get_zone, next_fires, normalize, seconds_first_warning, validate_cron
from tenants.models import validate_time_zone


def describe(cron: str) -> str:
    """Plain language for a valid expression.

    cron-descriptor reads the normalised form (``@daily`` as ``0 0 * * *``, ``5-5`` as
    ``5``), so it describes what runs rather than its own reading of the text.
    """
    fields = normalize(cron).split()
    if len(fields) == 6:  # ours has seconds last; cron-descriptor wants them first
        fields = [fields[5], *fields[:5]]
    options = Options()
    options.use_24hour_time_format = True
    return get_description(" ".join(fields), options)


def cron_warnings(cron: str) -> list[str]:
    """Non-blocking remarks on an expression (e.g. one that looks written seconds-first)."""
    warning = seconds_first_warning(cron)
    return [warning] if warning else []


def cron_preview(
    cron: str, zone: str, now: dt.datetime | None = None, count: int = 5
) -> dict[str, Any]:
    """What the Task form shows beside the cron field, as JSON-ready data.

    ``{"ok": False, "error": ...}`` for an invalid expression or zone; else the plain
    language ``description``, the ``next`` ``count`` runs in the zone and in UTC, and
    ``same_as_utc`` when both columns would read the same.
    """
    try:
        validate_cron(cron)
        validate_time_zone(zone)
    except ValidationError as exc:
        return {"ok": False, "error": " ".join(exc.messages), "warnings": []}
    tz = get_zone(zone)
    fires = next_fires(cron, now or timezone.now(), zone, count)
    runs = [
        {
            "local": f.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z"),
            "utc": f.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        for f in fires
    ]
    return {
        "ok": True,
        "description": describe(cron),
        "zone": zone,
        "warnings": cron_warnings(cron),
        "next": runs,
        # The zone's times read exactly as UTC's (UTC, Etc/UTC): one column says it all.
        "same_as_utc": all(run["local"] == run["utc"] for run in runs),
    }
