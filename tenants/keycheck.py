"""Detect a LOCKER_KEYS that is not the key set the stored Locker values were written with.

A process started with a wrong ``LOCKER_KEYS`` (a typo, another environment's key, the old key
dropped before ``rotate_locker_keys`` ran, a changed ``SECRET_KEY`` behind the development key)
reads nothing, and worse, writes values that every correctly configured process then cannot
read. The probe here is cheap enough to run at every start-up (system check ``tenants.E001``)
and before every new value is encrypted (``Locker.add``, any Locker save, the admin form):
it reads the few most recently updated encrypted values and
tries the configured keys on them. If none of them opens, the keys are wrong. If some open and
others do not, the keys are right but some values were written under a key that is gone
(``tenants.W001``). A database without encrypted Lockers has nothing to judge and passes.

Nothing here puts a value, a token or a key into a message: Lockers are named by key, tenant
and id.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenants import crypto

#: How many stored values are tried: the most recently updated ones, so the probe costs one
#: small query and a few HMAC checks whatever the size of the table.
SAMPLE_SIZE = 5

#: Every Fernet token starts with these characters (version byte 0x80 and the high bytes of
#: its timestamp), so the query can skip plaintext stored before encryption existed.
_TOKEN_PREFIX = "gAAAAA"

FIX = (
    "Set LOCKER_KEYS (in the environment or .env of every web and worker process) to the key "
    "the stored values were encrypted with. When rotating, put the new key first and the old "
    "key after it (LOCKER_KEYS=<new key>,<old key>), restart, then run "
    "`python manage.py rotate_locker_keys`; drop the old key only after that. Without "
    "LOCKER_KEYS (DEBUG=True), the development key is derived from SECRET_KEY: restore the "
    "SECRET_KEY the values were written with. If that key is lost for good, its values cannot "
    "be recovered: delete those Lockers (admin, or Locker.remove() in `manage.py shell`) and "
    "store them again with the new key."
)


@dataclass(frozen=True)
class KeyProbe:
    """What the configured keys made of the sampled values."""

    sampled: int
    #: Lockers among the sampled ones that no configured key opens (key, tenant and id only).
    unreadable: tuple[str, ...]

    @property
    def wrong_keys(self) -> bool:
        """True when values were sampled and the configured keys open none of them."""
        return self.sampled > 0 and len(self.unreadable) == self.sampled


def probe(using: str = "default", sample: int = SAMPLE_SIZE) -> KeyProbe:
    """Try the configured keys on the ``sample`` most recently updated encrypted values.

    Raises ``LockerKeysMissing`` when no key is configured (or one is malformed), and the
    database's own errors when it cannot be read.
    """
    from tenants.models import Locker

    rows = (
        Locker.objects.using(using)
        .filter(value__startswith=_TOKEN_PREFIX)
        .order_by("-updated_at", "-pk")
        .values_list("pk", "key", "tenant_id", "value")[:sample]
    )
    tokens = [row for row in rows if crypto.looks_like_token(row[3])]
    crypto.fernet()  # raises LockerKeysMissing before anything is judged
    unreadable = tuple(
        f"Locker key '{key}' of tenant {tenant_id} (id {pk})"
        for pk, key, tenant_id, value in tokens
        if not crypto.can_decrypt(value)
    )
    return KeyProbe(sampled=len(tokens), unreadable=unreadable)


def wrong_keys_message(result: KeyProbe) -> str:
    """Why the keys are wrong, in words an operator can act on (no value, no key)."""
    return (
        f"LOCKER_KEYS opens none of the {result.sampled} most recently updated Locker "
        "value(s): it does not hold the key they were encrypted with, so values written now "
        "could not be read by processes configured with the right key, and stored values "
        "cannot be read here."
    )


def ensure_keys_open_stored(using: str = "default") -> None:
    """Raise ``LockerWrongKeys`` (saying how to fix it) when the configured keys are wrong."""
    result = probe(using=using)
    if result.wrong_keys:
        raise crypto.LockerWrongKeys(f"{wrong_keys_message(result)} {FIX}")
