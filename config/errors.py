"""What error pages and error e-mails may show: no passwords, keys or tokens, even with DEBUG on.

``DEBUG`` is on by default (``./run.sh``), and Django's technical 500 page then lists every
setting, every ``request.META`` entry (under ``runserver`` that includes the whole process
environment: ``DATABASE_URL``, ``LOCKER_KEYS``, …) and the local variables of every frame (a
failed database connection holds the password in ``conn_params``). Django's default filter
hides settings and META entries by name only (``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE``),
so ``DATABASE_URL=postgres://user:password@host/db`` is shown as it is.

:class:`MetronomeExceptionReporterFilter` (``DEFAULT_EXCEPTION_REPORTER_FILTER``) hides:

- every setting, META entry and frame variable whose name matches :data:`SECRET_NAMES`
  (Django's list plus credentials, DSNs, private keys, ``DATABASE_URL``, ``LOCKER_KEYS``,
  ``METRICS_TOKEN``), and any ``*_URL`` whose value carries credentials;
- inside any other string, the password of a URL (``scheme://user:password@host`` becomes
  ``scheme://user:********@host``) and of a libpq connection string (``password=…``);
- the same in dicts, lists, tuples and sets, recursively (dict keys are names too);
- variables marked with ``sensitive_variables`` and POST parameters marked with
  ``sensitive_post_parameters`` (Django's login form's password), with DEBUG on as well as off.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils.datastructures import MultiValueDict
from django.views.debug import CallableSettingWrapper, SafeExceptionReporterFilter

#: Names whose values are secrets: Django's default pattern plus our own and common ones.
SECRET_NAMES = re.compile(
    r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL|PRIVATE|DSN|CONNINFO"
    r"|DATABASE_URL|LOCKER_KEYS|METRICS_TOKEN",
    flags=re.IGNORECASE,
)

#: The password of ``scheme://user:password@host`` (up to the last ``@`` before a blank, so a
#: password with a raw ``@`` is hidden whole); the scheme and user stay readable.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<password>\S+)@")

#: The password of a libpq keyword/value connection string: ``password=x`` or ``password='x y'``.
_CONNINFO_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|passwd)\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^\s']+)",
    flags=re.IGNORECASE,
)

#: A URL's user part with no password (``https://ghp_token@host``): tokens travel there too.
_URL_USER_ONLY = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:/@]+)@")

#: The value of a query parameter whose name looks secret (``?access_token=…``, ``&sig=…``).
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&][^=&\s#]*(?:token|key|secret|pass|auth|sig|credential)[^=&\s#]*=)"
    r"(?P<value>[^&\s#'\"]+)",
    flags=re.IGNORECASE,
)

#: How deep nested containers are cleansed (frame variables may be large or cyclic).
_MAX_DEPTH = 6

MASK = "********"


def has_credentials(text: str) -> bool:
    """True when ``text`` holds a URL with a password or a ``password=`` connection string."""
    return bool(_URL_PASSWORD.search(text) or _CONNINFO_PASSWORD.search(text))


def mask_credentials(text: str) -> str:
    """``text`` with every credential in a URL or connection string replaced by ``********``:
    URL passwords, a URL user part standing alone (often a token), query parameters whose
    name looks secret, and libpq ``password=`` values."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _URL_USER_ONLY.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
    return _CONNINFO_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


class MetronomeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, extended to credentials in values and to DEBUG pages (see module)."""

    hidden_settings = SECRET_NAMES

    def is_active(self, request: HttpRequest | None) -> bool:
        """Always: the technical page that DEBUG shows is where secrets leak in practice."""
        return True

    def is_secret(self, name: Any, value: Any) -> bool:
        """True when ``value``, named ``name``, must not be shown at all."""
        if not isinstance(name, str) or not name:
            return False
        if self.hidden_settings.search(name):
            return True
        return name.upper().endswith("_URL") and isinstance(value, str) and has_credentials(value)

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """A setting, META entry or cookie, with secrets hidden (see module)."""
        if key == settings.SESSION_COOKIE_NAME or self.is_secret(key, value):
            return self.cleansed_substitute
        cleansed = self._cleanse(value, 0)
        return CallableSettingWrapper(cleansed) if callable(cleansed) else cleansed

    def get_traceback_frame_variables(self, request: HttpRequest | None, tb_frame: Any) -> Any:
        """Frame variables, with secret names and credentials in values hidden."""
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [
            (
                name,
                self.cleansed_substitute
                if self.is_secret(name, value)
                else self._cleanse(value, 0),
            )
            for name, value in variables
        ]

    def _cleanse(self, value: Any, depth: int) -> Any:
        """``value`` with credentials masked in strings and secret keys hidden in containers."""
        if isinstance(value, str):
            return mask_credentials(value)
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
            return mask_credentials(text).encode() if has_credentials(text) else value
        if depth >= _MAX_DEPTH or isinstance(value, MultiValueDict):
            return value  # request.POST and friends: Django's own handling applies
        if isinstance(value, dict):
            return {
                k: self.cleansed_substitute if self.is_secret(k, v) else self._cleanse(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = [self._cleanse(v, depth + 1) for v in value]
            if isinstance(value, list):
                return items
            if isinstance(value, tuple):
                return tuple(items)
            return frozenset(items) if isinstance(value, frozenset) else set(items)
        return value
