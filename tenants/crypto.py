"""Encryption of Locker values at rest (Fernet), with keys that can rotate.

Why Fernet: it authenticates as well as encrypts, so a wrong key or a tampered value is
detected instead of decrypting to garbage, and ``MultiFernet`` reads values written under
any configured key while writing under the first one, which is what key rotation needs.

Keys come from ``settings.LOCKER_KEYS`` (env ``LOCKER_KEYS``, a comma list, current key
first). When it is empty and ``DEBUG`` was on at start-up, a key is derived from
``SECRET_KEY`` so that local development needs no configuration; that key is for
development only (anyone who knows ``SECRET_KEY`` can compute it). Otherwise every use
fails with :class:`LockerKeysMissing`, which says how to generate a key.

Nothing here ever puts a secret or a key into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

#: The shortest Locker value accepted. Secrets are kept out of error texts and log lines by
#: searching for each value (``integrations.base.redact``): a shorter one would blank
#: ordinary letters of every message, so it could not be masked, and is guessable anyway.
MIN_VALUE_LENGTH = 4

GENERATE_KEY_COMMAND = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)

#: Domain separation: the development key is not SECRET_KEY itself, nor usable for anything
#: else Django derives from SECRET_KEY.
_DEV_KEY_INFO = b"metronome locker development key (never use in production)"

# A Fernet token: url-safe base64 of version byte 0x80, 8-byte timestamp, 16-byte IV,
# AES-CBC ciphertext (a positive multiple of 16 bytes) and a 32-byte HMAC.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32


class LockerError(Exception):
    """A Locker value cannot be encrypted or decrypted; the message says why and what to do."""


class LockerKeysMissing(LockerError, ImproperlyConfigured):
    """No encryption key is configured (production without LOCKER_KEYS) or one is malformed."""


class LockerDecryptionError(LockerError):
    """A stored value does not decrypt under any configured key, or is not encrypted at all."""


class LockerWrongKeys(LockerError, ImproperlyConfigured):
    """The configured keys open none of the stored values sampled: they are not the keys in use.

    Writing under such keys would store values that the processes holding the right key cannot
    read, so writes are refused (see ``tenants/keycheck.py``).
    """


def looks_like_token(value: str) -> bool:
    """True when ``value`` has the shape of a Fernet token (whatever key made it).

    Used to tell values already encrypted from plaintext, so nothing is encrypted twice
    and plaintext stored before encryption existed can be recognised.
    """
    if not isinstance(value, str) or not _TOKEN_CHARS.fullmatch(value):
        return False
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, ValueError):
        return False
    body = len(raw) - _TOKEN_OVERHEAD
    return raw[:1] == b"\x80" and body >= 16 and body % 16 == 0


def development_key(secret_key: str) -> bytes:
    """The Fernet key derived from SECRET_KEY when DEBUG is on and LOCKER_KEYS is unset."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DEV_KEY_INFO).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(derived)


def configured_keys() -> tuple[str, ...]:
    """LOCKER_KEYS without blanks (an empty tuple means: development key or failure)."""
    return tuple(k.strip() for k in getattr(settings, "LOCKER_KEYS", ()) if k and k.strip())


def fernet() -> MultiFernet:
    """The configured keys as one MultiFernet (current key first); raises LockerKeysMissing."""
    allow_dev = bool(getattr(settings, "LOCKER_DEVELOPMENT_KEY", False))
    return _fernet(configured_keys(), allow_dev, settings.SECRET_KEY)


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...], allow_dev: bool, secret_key: str) -> MultiFernet:
    if not keys:
        if not allow_dev:
            raise LockerKeysMissing(
                "LOCKER_KEYS is not set, so Locker values cannot be encrypted or decrypted. "
                f"Generate a key with `{GENERATE_KEY_COMMAND}` and set LOCKER_KEYS=<that key> "
                "in the environment (or .env) of every web and worker process. "
                "(With DEBUG=True a development key is derived from SECRET_KEY instead.)"
            )
        return MultiFernet([Fernet(development_key(secret_key))])
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, binascii.Error):
            raise LockerKeysMissing(
                f"Key number {position} of {len(keys)} in LOCKER_KEYS is not a Fernet key "
                "(32 url-safe base64-encoded bytes). Generate one with "
                f"`{GENERATE_KEY_COMMAND}`."
            ) from None
    return MultiFernet(fernets)


def encrypt(plaintext: str) -> str:
    """A Fernet token for ``plaintext``, under the current (first) key."""
    return fernet().encrypt(plaintext.encode()).decode("ascii")


def can_decrypt(token: str) -> bool:
    """True when ``token`` is a token that one of the configured keys opens."""
    if not looks_like_token(token):
        return False
    try:
        fernet().decrypt(token.encode("ascii"))
    except InvalidToken:
        return False
    return True


def decrypt(token: str, *, what: str) -> str:
    """The plaintext of ``token``; ``what`` names the value in errors (never the value)."""
    if not looks_like_token(token):
        raise LockerDecryptionError(
            f"{what} is not encrypted: plaintext stored before Locker encryption existed, "
            "written around Locker.save() (a queryset update), or assigned and not saved yet. "
            "Run `python manage.py rotate_locker_keys` to encrypt stored plaintext, or store "
            "the value again with Locker.add()."
        )
    try:
        plaintext = fernet().decrypt(token.encode("ascii"))
    except InvalidToken:
        raise LockerDecryptionError(
            f"{what} cannot be decrypted with any key in LOCKER_KEYS: the key it was "
            "encrypted with is not configured (removed before `manage.py rotate_locker_keys` "
            "ran, or a different LOCKER_KEYS/SECRET_KEY in this process), or the stored value "
            "is corrupt. Add the old key after the current one in LOCKER_KEYS, or store the "
            "value again with Locker.add()."
        ) from None
    return plaintext.decode()


def rotate(token: str) -> str:
    """``token`` re-encrypted under the current key; raises InvalidToken if no key opens it."""
    return fernet().rotate(token.encode("ascii")).decode("ascii")
