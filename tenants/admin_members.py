"""Membership editing on the tenant admin page: who may grant which role, and whom.

Owners (and superusers) manage every membership and role. Admins add members as admin
or viewer and change or remove admins and viewers, but never touch an owner membership,
grant the owner role or change their own membership. A tenant always keeps at least one
owner, and the user named in ``Tenant.owner`` is always one of its owner members.

New members are entered by username or e-mail and resolved on the server to one active
user, so the page never offers a list of the installation's users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db.models import QuerySet
from django.forms.formsets import DELETION_FIELD_NAME

from tenants.access import AccessUser, can_manage_owners, grantable_roles
from tenants.models import Membership, Tenant

OWNER = Membership.Role.OWNER

NO_SUCH_USER = (
    "No active user has that username or e-mail. Enter the exact username or e-mail "
    "of an existing active user."
)
AMBIGUOUS_EMAIL = "More than one active user has that e-mail; enter the username instead."


def find_active_user(text: str) -> AbstractBaseUser:
    """The active user whose username is ``text``, else the only active user with that e-mail.

    Raises ValidationError (saying what to enter instead) when there is no such user.
    """
    text = text.strip()
    user_model = get_user_model()
    active = user_model._default_manager.filter(is_active=True)
    user = active.filter(**{user_model.USERNAME_FIELD: text}).first()
    if user is not None:
        return user
    if "@" in text:
        matches = list(active.filter(**{f"{user_model.get_email_field_name()}__iexact": text})[:2])
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValidationError(AMBIGUOUS_EMAIL, code="ambiguous_email")
    raise ValidationError(NO_SUCH_USER, code="no_such_user")


def owner_members(tenant: Tenant) -> QuerySet:
    """Users who are owner members of ``tenant`` (none for an unsaved tenant)."""
    users = get_user_model()._default_manager
    if tenant.pk is None:
        return users.none()
    return users.filter(memberships__tenant_id=tenant.pk, memberships__role=OWNER)


class MemberField(forms.Field):
    """A user typed as username or e-mail; an existing row shows its user's username."""

    widget = forms.TextInput(attrs={"placeholder": "username or e-mail", "autocomplete": "off"})
    default_error_messages = {"required": "Enter the username or e-mail of the user to add."}

    def prepare_value(self, value: Any) -> Any:
        return value.get_username() if isinstance(value, AbstractBaseUser) else value

    def to_python(self, value: Any) -> AbstractBaseUser | None:
        if isinstance(value, AbstractBaseUser):
            return value  # an existing row's user (the field is disabled there)
        text = "" if value is None else str(value).strip()
        return find_active_user(text) if text else None

    def has_changed(self, initial: Any, data: Any) -> bool:
        return not self.disabled and bool(str(data or "").strip())


class MembershipForm(forms.ModelForm):
    """One membership row: a new row takes a username or e-mail, an existing row its role."""

    user = MemberField(label="User", help_text="Username or e-mail of an existing active user.")

    #: Why the disabled fields of this row are locked for the acting user (set by the formset).
    locked_reason: str = ""

    class Meta:
        model = Membership
        fields = ["user", "role"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["user"] = self.instance.user
            self.fields["user"].disabled = True

    def clean_user(self) -> AbstractBaseUser | None:
        user = self.cleaned_data.get("user")
        tenant_id = self.instance.tenant_id
        existing = Membership.objects.filter(tenant_id=tenant_id, user=user)
        if user is not None and self.instance.pk is None and tenant_id and existing.exists():
            raise ValidationError(
                f"{user.get_username()} is already a member of this tenant; "
                "change the role in their row instead.",
                code="already_member",
            )
        return user

    def clean(self) -> dict[str, Any]:
        super().clean()  # a ModelForm's clean() gives back its cleaned_data
        cleaned = self.cleaned_data
        # A browser never submits a disabled field: a differing value is a forged request,
        # refused with the reason rather than silently ignored.
        for name, field in self.fields.items():
            key = self.add_prefix(name)
            if not field.disabled or key not in self.data:
                continue
            posted = field.widget.value_from_datadict(self.data, self.files, key)
            kept = field.prepare_value(self.get_initial_for_field(field, name))
            if name == DELETION_FIELD_NAME:
                posted, kept = bool(posted), bool(kept)
            if str(posted) != str(kept):
                self.add_error(
                    None,
                    self.locked_reason
                    if name != "user"
                    else "The user of a membership cannot be changed: remove the row and "
                    "add the user again.",
                )
        return cleaned


if TYPE_CHECKING:
    _MembershipFormSetBase = forms.BaseInlineFormSet[Membership, Tenant, forms.ModelForm[Any]]
else:  # Django's formsets take no type arguments at run time
    _MembershipFormSetBase = forms.BaseInlineFormSet


class MembershipFormSet(_MembershipFormSetBase):
    """The tenant's memberships, checked as a whole against the acting user's role."""

    #: The user editing the page; set per request by ``MembershipInline.get_formset``.
    acting_user: AccessUser | None = None
    #: Set by ``clean``: the tenant's owner must be added as an owner member on save.
    owner_membership_missing: bool = False

    @property
    def actor(self) -> AccessUser:
        return self.acting_user if self.acting_user is not None else AnonymousUser()

    def add_fields(self, form: forms.ModelForm[Any], index: int | None) -> None:
        super().add_fields(form, index)
        if not isinstance(form, MembershipForm):
            raise ImproperlyConfigured(
                f"MembershipFormSet got a {type(form).__name__}; its rows must be "
                "MembershipForms (keep form = MembershipForm on the inline)."
            )
        tenant_id = self.instance.pk
        if "role" not in form.fields or can_manage_owners(self.actor, tenant_id):
            return
        row = form.instance
        own_row = row.pk is not None and row.user_id == self.actor.pk
        if row.pk is not None and (own_row or row.role == OWNER):
            form.locked_reason = (
                "Only an owner can change or remove your own membership."
                if own_row
                else "Only an owner can change or remove an owner membership."
            )
            form.fields["role"].disabled = True
            if DELETION_FIELD_NAME in form.fields:
                form.fields[DELETION_FIELD_NAME].disabled = True
            return
        allowed = grantable_roles(self.actor, tenant_id)
        role = form.fields["role"]
        if not isinstance(role, forms.ChoiceField):
            raise ImproperlyConfigured(
                f"MembershipForm's role field is a {type(role).__name__}; the role rules need "
                "a ChoiceField (the model field's choices)."
            )
        role.choices = [
            (value, name) for value, name in Membership.Role.choices if value in allowed
        ]
        role.error_messages["invalid_choice"] = (
            "Only an owner can make someone an owner; choose "
            + " or ".join(allowed or ("nothing: your role cannot change memberships",))
            + "."
        )

    def _refusal(self, user_id: int, before: str | None, after: str | None) -> str | None:
        """Why the acting user may not take a membership from role ``before`` to ``after``
        (None: absent), or None when they may."""
        if before == after or can_manage_owners(self.actor, self.instance.pk):
            return None
        if not grantable_roles(self.actor, self.instance.pk):
            return "Your role in this tenant does not allow changing memberships."
        if before == OWNER:
            return "Only an owner can change or remove an owner membership."
        if after == OWNER:
            return "Only an owner can make someone an owner."
        if user_id == self.actor.pk:
            return "Only an owner can change or remove your own membership."
        return None

    def clean(self) -> None:
        super().clean()
        self.owner_membership_missing = False
        # _should_delete_form: BaseFormSet's own test, which django-stubs does not declare.
        deleting = {
            f
            for f in self.forms
            if self.can_delete and self._should_delete_form(f)  # type: ignore[attr-defined]
        }
        if not all(form.is_valid() for form in self.forms if form not in deleting):
            return  # the rows' own errors come first
        tenant = self.instance
        roles: dict[int, str] = {}
        if tenant.pk is not None:
            memberships = Membership.objects.filter(tenant_id=tenant.pk)
            roles = dict(memberships.values_list("user_id", "role"))
        errors: list[str] = []
        removed: set[int] = set()
        for form in self.forms:
            if form.instance.pk is not None:
                user, before = form.initial["user"], form.initial["role"]
            elif form in deleting or not form.has_changed():
                continue
            else:
                user, before = form.cleaned_data["user"], None
            after = None if form in deleting else form.cleaned_data.get("role", before)
            refusal = self._refusal(user.pk, before, after)
            if refusal and refusal not in errors:
                errors.append(refusal)
            if after is None:
                roles.pop(user.pk, None)
                removed.add(user.pk)
            else:
                roles[user.pk] = after
        errors += self._owner_errors(tenant, roles, removed)
        if errors:
            raise ValidationError(errors)

    def _owner_errors(self, tenant: Tenant, roles: dict[int, str], removed: set[int]) -> list[str]:
        """Errors when the memberships as saved would leave no owner, or leave the user in
        the Owner field without the owner role. Marks a missing owner membership for adding."""
        errors = []
        if tenant.owner_id is not None:
            name = tenant.owner.get_username()
            if tenant.owner_id in removed:
                errors.append(
                    f"{name}, the tenant's owner, cannot be removed: choose another owner in "
                    "the Owner field first."
                )
            elif tenant.owner_id not in roles:
                self.owner_membership_missing = True  # the tenant's owner joins as an owner
                roles[tenant.owner_id] = OWNER
            elif roles[tenant.owner_id] != OWNER:
                errors.append(
                    f"{name}, the tenant's owner, must have the role owner: make them an "
                    "owner below, or choose another owner in the Owner field."
                )
        if OWNER not in roles.values():
            errors.append(
                "A tenant always keeps at least one owner: make another member an owner "
                "before removing or demoting the last one."
            )
        return errors

    def save(self, commit: bool = True) -> list[Membership]:
        """Save new members first, then promotions to owner, then the other changes and
        removals, so no intermediate state lacks an owner (the model refuses that)."""
        if not commit:
            return super().save(commit=False)
        new = self.save_new_objects(commit)
        everything = self.forms
        initial = self.initial_forms

        def promotes(form: forms.ModelForm[Any]) -> bool:
            deleted = self._should_delete_form(form)  # type: ignore[attr-defined]
            return not deleted and form.cleaned_data.get("role") == OWNER

        self.forms = (
            sorted(initial, key=lambda form: not promotes(form)) + everything[len(initial) :]
        )
        try:
            existing = self.save_existing_objects(commit)
        finally:
            self.forms = everything
        return existing + new
