"""System checks on the Locker keys, run at start-up by runserver, migrate and the workers.

``manage.py procrastinate worker``, ``runserver``, ``migrate`` and ``check`` run Django's
system checks before they start (unless ``--skip-checks``), so a process configured with the
wrong ``LOCKER_KEYS`` refuses to start with an error naming the fix instead of failing every job
that needs a secret, or writing secrets nobody else can read.

Unlike Django's own checks, this one reads the database even without ``--database``: the
worker's start-up is the moment that matters, and its command passes no database. It costs one
small query (see ``tenants/keycheck.py``). When the database cannot be read (unreachable, not
migrated yet), it says nothing: other checks and commands report that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError, transaction

from tenants import crypto, keycheck

TAG = "metronome"


@register(TAG)
def check_locker_keys(
    app_configs: Sequence[AppConfig] | None = None,
    databases: Iterable[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """``tenants.E002``: keys missing or malformed; ``tenants.E001``: keys open no stored value;
    ``tenants.W001``: some sampled values were written under a key that is gone."""
    if app_configs is not None and not any(c.label == "tenants" for c in app_configs):
        return []
    try:
        crypto.fernet()
    except crypto.LockerKeysMissing as exc:
        return [Error(str(exc), id="tenants.E002")]
    messages: list[CheckMessage] = []
    for alias in databases if databases is not None else ["default"]:
        try:
            with transaction.atomic(using=alias):
                result = keycheck.probe(using=alias)
        except DatabaseError:
            continue
        if result.wrong_keys:
            messages.append(
                Error(
                    keycheck.wrong_keys_message(result),
                    hint=keycheck.FIX,
                    obj="LOCKER_KEYS",
                    id="tenants.E001",
                )
            )
        elif result.unreadable:
            messages.append(
                CheckWarning(
                    f"{len(result.unreadable)} of the {result.sampled} most recently updated "
                    "Locker values cannot be decrypted with LOCKER_KEYS: "
                    + ", ".join(result.unreadable)
                    + ".",
                    hint="Add the key they were encrypted with after the current one in "
                    "LOCKER_KEYS and run `python manage.py rotate_locker_keys`, or store "
                    "those values again with Locker.add().",
                    obj="LOCKER_KEYS",
                    id="tenants.W001",
                )
            )
    return messages
