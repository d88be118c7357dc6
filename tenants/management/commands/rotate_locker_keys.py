"""``manage.py rotate_locker_keys``: re-encrypt every Locker value under the current key.

Rotating a key takes three steps, because every process must be able to read every value
at every moment:

1. put the new key first in LOCKER_KEYS, keeping the old ones after it, in every web and
   worker process (they read old values and write new ones under the new key);
2. run this command once: it re-encrypts every value under the first key;
3. remove the old keys from LOCKER_KEYS.

The command runs in one transaction and changes nothing if any value cannot be decrypted
(it names those Lockers, never their values). Plaintext stored before Locker encryption
existed is encrypted too. Running it again is harmless: it just re-encrypts under the
same key. It bypasses ``Locker.save()`` on purpose: a rotation is not a user's edit, so it
neither touches ``updated_at`` nor writes audit entries.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from tenants import crypto
from tenants.models import Locker


class Command(BaseCommand):
    help = (
        "Re-encrypt every Locker value under the current (first) key of LOCKER_KEYS; "
        "also encrypts plaintext stored before encryption. Safe to run twice."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            crypto.fernet()
        except crypto.LockerKeysMissing as exc:
            raise CommandError(str(exc)) from None
        rotated = encrypted = 0
        failures: list[str] = []
        with transaction.atomic():
            rows = Locker.objects.select_for_update().order_by("pk")
            updates: list[Locker] = []
            for pk, key, tenant_id, value in rows.values_list("pk", "key", "tenant_id", "value"):
                if crypto.looks_like_token(value):
                    try:
                        new = crypto.rotate(value)
                    except InvalidToken:
                        failures.append(f"Locker key '{key}' of tenant {tenant_id} (id {pk})")
                        continue
                    rotated += 1
                else:
                    new = crypto.encrypt(value)
                    encrypted += 1
                updates.append(Locker(pk=pk, value=new))
            if failures:
                raise CommandError(
                    f"{len(failures)} Locker value(s) cannot be decrypted with any key in "
                    "LOCKER_KEYS; nothing was changed. Add the key they were encrypted with "
                    "after the current one in LOCKER_KEYS, or store them again with "
                    "Locker.add():\n  " + "\n  ".join(failures)
                )
            Locker.objects.bulk_update(updates, ["value"], batch_size=500)
        total = rotated + encrypted
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-encrypted {total} Locker value(s) under the current key "
                f"({rotated} rotated, {encrypted} plaintext value(s) encrypted)."
            )
        )
        key_count = len(crypto.configured_keys())
        if key_count > 1:
            self.stdout.write(
                f"LOCKER_KEYS holds {key_count} keys. Once every web and worker process runs "
                "with the current key first, the older keys may be removed."
            )
