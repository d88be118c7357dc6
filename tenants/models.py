"""Tenants own everything else: integrations, tasks, secrets, queues."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Collection
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils import timezone

from tenants import crypto, keycheck
from tenants.queues import queue_for

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # settings.AUTH_USER_MODEL


@cache
def time_zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in time_zone_names():
        raise ValidationError(
            "'%(value)s' is not a known IANA time zone; use a name such as 'UTC', "
            "'Europe/Berlin' or 'America/New_York'.",
            code="invalid_time_zone",
            params={"value": value},
        )


def default_time_zone() -> str:
    return settings.TIME_ZONE


def paused_q(now: dt.datetime) -> models.Q:
    """Rows paused at ``now``: a pause began and has not ended by itself yet.

    The tick's raw query uses the same condition in SQL, :func:`paused_sql`.
    """
    return models.Q(paused_at__isnull=False) & (
        models.Q(paused_until__isnull=True) | models.Q(paused_until__gt=now)
    )


def paused_sql(alias: str, now_placeholder: str) -> str:
    """:func:`paused_q` as an SQL condition on table ``alias``, for the tick's raw query."""
    return (
        f"({alias}.paused_at IS NOT NULL AND ({alias}.paused_until IS NULL "
        f"OR {alias}.paused_until > {now_placeholder}))"
    )


class PausableQuerySet(models.QuerySet):
    """``.paused(now)`` and ``.not_paused(now)``, with ``now`` defaulting to the clock."""

    def paused(self, now: dt.datetime | None = None) -> PausableQuerySet:
        return self.filter(paused_q(now or timezone.now()))

    def not_paused(self, now: dt.datetime | None = None) -> PausableQuerySet:
        return self.exclude(paused_q(now or timezone.now()))


class Pausable(models.Model):
    """A pause with a note and an optional end: no scheduled runs while paused.

    Ticks that fall inside a pause are neither run nor counted as missed.
    """

    paused_at = models.DateTimeField(null=True, blank=True)
    pause_note = models.CharField(max_length=500, blank=True)
    paused_until = models.DateTimeField(
        null=True, blank=True, help_text="The pause ends by itself at this time (optional)."
    )
    #: Saved with every pause and resume; concrete models may redeclare it in their own
    #: field order.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def is_paused(self, now: dt.datetime | None = None) -> bool:
        if self.paused_at is None:
            return False
        return self.paused_until is None or self.paused_until > (now or timezone.now())

    def pause(
        self, note: str = "", until: dt.datetime | None = None, now: dt.datetime | None = None
    ) -> None:
        now = now or timezone.now()
        if until is not None and until <= now:
            raise ValidationError({"paused_until": "The end of a pause must be in the future."})
        self.paused_at, self.pause_note, self.paused_until = now, note, until
        self.save(update_fields=["paused_at", "pause_note", "paused_until", "updated_at"])

    def resume(self) -> None:
        self.paused_at, self.pause_note, self.paused_until = None, "", None
        self.save(update_fields=["paused_at", "pause_note", "paused_until", "updated_at"])


class Tenant(Pausable):
    name = models.CharField(max_length=200, unique=True)
    email = models.EmailField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_tenants"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="tenants"
    )
    timezone = models.CharField(
        max_length=64,
        default=default_time_zone,
        validators=[validate_time_zone],
        help_text="IANA time zone in which this tenant's cron expressions are read.",
    )
    is_active = models.BooleanField(
        default=True, help_text="Inactive tenants get no scheduled runs."
    )
    weight = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Share of a shared worker pool against other busy tenants (1-100; "
        "a tenant of weight 3 runs three jobs for each one of a tenant of weight 1).",
    )
    max_running = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="At most this many of the tenant's jobs run at once, across all workers "
        "(empty: no limit), e.g. to respect the tenant's API rate limit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PausableQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue_name(self) -> str:
        """The procrastinate queue of this tenant's jobs (``tenants.queues``)."""
        return queue_for(self)

    @classmethod
    def create(cls, user: User, name: str, email: str, **fields: Any) -> Tenant:
        """Create a tenant owned by ``user`` (an owner member); all or nothing, validated first."""
        tenant = cls(name=name, email=email, owner=user, **fields)
        tenant.full_clean()
        with transaction.atomic():
            tenant.save()
            Membership.objects.create(tenant=tenant, user=user, role=Membership.Role.OWNER)
        return tenant


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="unique_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} of {self.tenant}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save, refusing to demote the tenant's owner of record or its last owner member."""
        with transaction.atomic():
            self._ensure_tenant_keeps_an_owner(removing=False)
            super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Delete, refusing to remove the tenant's owner of record or its last owner member.

        Deleting the tenant itself (which cascades) is not affected.
        """
        with transaction.atomic():
            self._ensure_tenant_keeps_an_owner(removing=True)
            return super().delete(*args, **kwargs)

    def _ensure_tenant_keeps_an_owner(self, removing: bool) -> None:
        """Raise ValidationError if this change leaves the tenant without an owner member,
        or takes the owner role from the user named in ``Tenant.owner``.

        The tenant row is locked first, so concurrent demotions of a tenant's two owners
        cannot both pass.
        """
        if self.pk is None:
            return
        stored = Membership.objects.filter(pk=self.pk)
        tenant_id = stored.values_list("tenant_id", flat=True).first()
        if tenant_id is None:
            return
        tenant = Tenant.objects.select_for_update().filter(pk=tenant_id).first()
        before = stored.values_list("role", "user_id", "tenant_id").first()  # under the lock
        if tenant is None or before is None or before[0] != self.Role.OWNER:
            return
        if not removing and (self.role, self.user_id, self.tenant_id) == before:
            return  # still the same owner
        action = "remove" if removing else "change the role of"
        if tenant.owner_id == before[1]:
            raise ValidationError(
                f"Cannot {action} {tenant.owner}: they are the owner of tenant '{tenant}'. "
                "Make another owner member the tenant's owner first.",
                code="tenant_owner",
            )
        others = Membership.objects.filter(tenant_id=tenant.pk, role=self.Role.OWNER)
        if not others.exclude(pk=self.pk).exists():
            raise ValidationError(
                f"Cannot {action} the last owner of tenant '{tenant}': a tenant always keeps "
                "at least one owner. Make another member an owner first.",
                code="last_owner",
            )


def validate_locker_value(value: object) -> None:
    """Raise ValidationError unless ``value`` is a string a Locker may store: not empty, and
    long enough to be masked in error texts and logs (:data:`crypto.MIN_VALUE_LENGTH`)."""
    if not isinstance(value, str) or value == "":
        raise ValidationError({"value": "A Locker value must be a non-empty string."})
    if len(value) < crypto.MIN_VALUE_LENGTH:
        raise ValidationError(
            {
                "value": f"A Locker value must be at least {crypto.MIN_VALUE_LENGTH} "
                f"characters long (this one has {len(value)}): errors and logs are kept free "
                "of secrets by masking each stored value, which a shorter one would make "
                "impossible. Store the whole token or password."
            }
        )


class Locker(models.Model):
    """A tenant's secrets (API tokens), read by integration code at run time only.

    ``value`` holds a Fernet token (see ``tenants/crypto.py``), never plaintext: assign
    plaintext to ``value`` (as ``Locker.add`` and the admin form do) and ``save()``
    encrypts it; read it with ``reveal()`` or ``Locker.get``. A value equal to the token
    loaded from the database, or any token the configured keys open, is kept as it is,
    so a value is never encrypted twice and an unchanged admin form stores nothing new.
    The value never appears in ``str()``/``repr()``, logs or job arguments.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="lockers")
    key = models.SlugField(
        max_length=100, help_text="Name the integration looks the secret up by, e.g. github_token."
    )
    value = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    #: Fields never shown, filtered, searched, ordered on or written to the audit trail.
    secret_fields: ClassVar[tuple[str, ...]] = ("value",)

    #: The token as loaded from (or last written to) the database; None for a new instance.
    _stored_token: str | None = None

    class Meta:
        ordering = ["tenant", "key"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="unique_locker_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} (tenant {self.tenant_id})"

    def __repr__(self) -> str:
        return f"<Locker {self.key!r} tenant={self.tenant_id}>"

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        writes_value = "value" not in self.get_deferred_fields() and (
            update_fields is None or "value" in update_fields
        )
        if writes_value:
            self._encrypt_value()
        super().save(*args, **kwargs)
        if writes_value:
            self._stored_token = self.value

    @classmethod
    def from_db(
        cls,
        db: str | None,
        field_names: Collection[str],
        values: Collection[Any],
        **kwargs: Any,
    ) -> Locker:
        # ``kwargs``: keyword options later Django versions pass along (``fetch_mode``).
        instance = super().from_db(db, field_names, values, **kwargs)
        instance._stored_token = instance.__dict__.get("value")
        return instance

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        if "value" in self.__dict__:
            self._stored_token = self.value

    def _encrypt_value(self) -> None:
        value = self.value
        if value == self._stored_token and crypto.looks_like_token(value):
            return  # unchanged since loaded: already encrypted (even under a retired key)
        if crypto.looks_like_token(value) and crypto.can_decrypt(value):
            return  # a token of ours (e.g. copied from another Locker): never encrypt twice
        validate_locker_value(value)
        # A value written under keys that open none of the stored ones could not be read
        # by the processes configured with the right key.
        keycheck.ensure_keys_open_stored()
        self.value = crypto.encrypt(value)

    def _describe(self) -> str:
        return f"Locker key '{self.key}' of tenant {self.tenant_id}"

    def reveal(self) -> str:
        """The plaintext of the saved value; raises LockerError (never returns ciphertext)."""
        return crypto.decrypt(self.value, what=self._describe())

    @classmethod
    def add(cls, key: str, value: str, tenant_id: int) -> Locker:
        """Store ``value`` under ``key`` for the tenant, encrypted, replacing any previous one.

        Raises ``LockerWrongKeys`` and stores nothing when LOCKER_KEYS opens none of the
        stored values: a value written under the wrong key could not be read elsewhere.
        """
        validate_locker_value(value)
        if not Tenant.objects.filter(pk=tenant_id).exists():
            raise ValidationError({"tenant": f"There is no tenant with id {tenant_id}."})
        keycheck.ensure_keys_open_stored()
        token = crypto.encrypt(value)  # here, not in save(): ``value`` is always plaintext
        locker = cls.objects.filter(tenant_id=tenant_id, key=key).first() or cls(
            tenant_id=tenant_id, key=key
        )
        locker.value = token
        locker.full_clean(validate_unique=False)
        locker.save()
        return locker

    @classmethod
    def get(cls, key: str, tenant_id: int, default: str | None = None) -> str | None:
        """The decrypted value stored under ``key`` for the tenant, or ``default`` if none.

        Raises LockerError when the value cannot be decrypted (missing or wrong key).
        """
        locker = cls.objects.filter(tenant_id=tenant_id, key=key).first()
        if locker is None:
            return default
        return locker.reveal()

    @classmethod
    def remove(cls, key: str, tenant_id: int) -> bool:
        """Delete the secret; True if there was one."""
        deleted, _ = cls.objects.filter(tenant_id=tenant_id, key=key).delete()
        return bool(deleted)
