"""Keeps secrets and remote servers' words out of stored errors and log lines.

A remote server can put anything in its error answers, including the ``Authorization``
header it received; integration code often copies that text into an exception, and the
exception ends up in ``TaskRun.error`` (read by every member of the tenant, viewers
included), in ``attempt_log`` and in the worker's log. So:

* :func:`excerpt` cuts remote text to :data:`REMOTE_TEXT_LIMIT` characters on one line
  before it goes into a message;
* :func:`redact` replaces each known secret (a tenant's Locker values) by :data:`MASK`;
* :func:`scrub_exception` does so inside an exception and its chain, in place, so that
  whoever formats it later (procrastinate's worker logs every failed job with its
  traceback) sees the masked text;
* secrets read in this process are remembered (:func:`remember`), and
  :func:`scrub_log_record` masks them in any log record; ``scheduler.logcontext``'s filter,
  installed on the console handler, calls it for every line.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

from tenants.crypto import MIN_VALUE_LENGTH as MIN_SECRET_LENGTH

MASK = "***"
#: At most this many characters of a remote server's text go into an error message.
REMOTE_TEXT_LIMIT = 200
#: How many secrets a process remembers for its log lines (oldest forgotten first).
REMEMBERED_SECRETS = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class RedactedError(Exception):
    """Stands in for an exception whose text still showed a secret after scrubbing."""


def excerpt(text: object, limit: int = REMOTE_TEXT_LIMIT) -> str:
    """``text`` on one line (control characters become spaces), cut to ``limit`` characters.

    For text a remote server chose: it can neither flood an error message nor forge
    extra log lines.
    """
    flat = _CONTROL.sub(" ", str(text)).strip()
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}… ({len(flat) - limit} more characters cut)"


def _variants(secrets: Iterable[str]) -> list[str]:
    """Each secret as it may appear in text: raw, JSON-escaped, repr-escaped, URL-quoted."""
    found: set[str] = set()
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < MIN_SECRET_LENGTH:
            continue
        for form in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], quote(secret, safe="")):
            if len(form) >= MIN_SECRET_LENGTH:
                found.add(form)
    return sorted(found, key=len, reverse=True)  # longest first: a secret may contain another


def _pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    variants = _variants(secrets)
    return re.compile("|".join(map(re.escape, variants))) if variants else None


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by :data:`MASK`."""
    pattern = _pattern(secrets)
    return pattern.sub(MASK, text) if pattern else text


def tenant_secrets(tenant_id: int | None) -> list[str]:
    """Every Locker value of the tenant, decrypted; values that cannot be decrypted are
    skipped (no code could have read them either)."""
    if tenant_id is None:
        return []
    from tenants.models import Locker

    values = []
    for locker in Locker.objects.filter(tenant_id=tenant_id):
        try:
            values.append(locker.reveal())
        except Exception:  # an unreadable value cannot leak
            continue
    return values


# ------------------------------------------------------------------- remembered secrets


class _Remembered:
    """The secrets this process has handled, as one compiled pattern (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}  # insertion-ordered set
        self.pattern: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str]) -> None:
        fresh = [s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH]
        with self._lock:
            if all(s in self._secrets for s in fresh):
                return
            for secret in fresh:
                self._secrets.pop(secret, None)
                self._secrets[secret] = None
            while len(self._secrets) > REMEMBERED_SECRETS:
                del self._secrets[next(iter(self._secrets))]
            self.pattern = _pattern(self._secrets)

    def values(self) -> list[str]:
        with self._lock:
            return list(self._secrets)


_remembered = _Remembered()


def remember(secrets: Iterable[str]) -> None:
    """Mask these values in every log record of this process from now on."""
    _remembered.add(secrets)


def known_secrets() -> list[str]:
    return _remembered.values()


_formatter = logging.Formatter()


def scrub_log_record(record: logging.LogRecord) -> None:
    """Mask remembered secrets in the record's message, exception and stack text.

    The record is rewritten only when a secret is found (message pre-formatted, args
    dropped, ``exc_text`` set to the masked traceback, which formatters print as is).
    """
    pattern = _remembered.pattern
    if pattern is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string is logging's problem, not ours
        message = str(record.msg)
    if pattern.search(message):
        record.msg = pattern.sub(MASK, message)
        record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or _formatter.formatException(record.exc_info)
        if pattern.search(text):
            record.exc_text = pattern.sub(MASK, text)
    elif record.exc_text and pattern.search(record.exc_text):
        record.exc_text = pattern.sub(MASK, record.exc_text)
    if record.stack_info and pattern.search(record.stack_info):
        record.stack_info = pattern.sub(MASK, record.stack_info)


# ------------------------------------------------------------------------- exceptions

_TEXT_ATTRIBUTES = ("strerror", "filename", "filename2", "msg", "message", "reason")


def _scrub_one(exc: BaseException, pattern: re.Pattern[str]) -> bool:
    """Mask secrets in ``exc``'s own text in place; True when ``str(exc)`` is clean."""
    try:
        if not pattern.search(str(exc)) and not any(
            pattern.search(note) for note in getattr(exc, "__notes__", ()) if isinstance(note, str)
        ):
            return True
        exc.args = tuple(pattern.sub(MASK, a) if isinstance(a, str) else a for a in exc.args)
        for name in _TEXT_ATTRIBUTES:
            value = getattr(exc, name, None)
            if isinstance(value, str) and pattern.search(value):
                setattr(exc, name, pattern.sub(MASK, value))
        if pattern.search(str(exc)):
            exc.args = (pattern.sub(MASK, str(exc)),)
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            notes[:] = [pattern.sub(MASK, n) if isinstance(n, str) else n for n in notes]
        return not pattern.search(str(exc))
    except Exception:  # read-only attributes, odd __str__: treat as unscrubbable
        return False


def scrub_exception(exc: BaseException, secrets: Iterable[str]) -> bool:
    """Mask ``secrets`` in ``exc``, its causes, contexts and group members, in place.

    A chained exception whose text cannot be cleaned is cut from the chain. Returns False
    when ``exc`` itself cannot be cleaned: the caller must not let it travel further
    (raise a :class:`RedactedError` with the masked text instead).
    """
    pattern = _pattern(secrets)
    if pattern is None:
        return True
    seen: set[int] = set()

    def walk(current: BaseException) -> bool:
        if id(current) in seen:
            return True
        seen.add(id(current))
        clean = _scrub_one(current, pattern)
        for member in getattr(current, "exceptions", ()) or ():
            if isinstance(member, BaseException) and not walk(member):
                clean = False
        for link in ("__cause__", "__context__"):
            nested = getattr(current, link)
            if nested is not None and not walk(nested):
                setattr(current, link, None)
                current.__suppress_context__ = True
        return clean

    return walk(exc)
