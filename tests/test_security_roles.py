"""Tenant roles under attack: what owners, admins and viewers of tenant A may do on the
tenant admin page, that a tenant keeps an owner, and that no page names users from
outside the tenant. Every request goes through Django's test client as a staff user
(not a superuser) with a Membership in tenant A, unless it says otherwise."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.core.exceptions import ValidationError

from tenants.models import Membership, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(django_user_model):
    """acme: olivia (owner, Tenant.owner), adam and ada (admins), vera (viewer).
    globex: bella (owner, only in globex). Plus newbie (in no tenant) and root (superuser)."""
    make = django_user_model.objects.create_user
    users = {
        name: make(name, f"{name}@example.com", None, is_staff=True)  # force_login only
        for name in ("olivia", "adam", "ada", "vera", "bella", "newbie")
    }
    users["root"] = django_user_model.objects.create_superuser("root", "root@example.com", None)
    acme = Tenant.create(users["olivia"], "acme", "ops@acme.example")
    for name, role in (("adam", "admin"), ("ada", "admin"), ("vera", "viewer")):
        Membership.objects.create(tenant=acme, user=users[name], role=role)
    globex = Tenant.create(users["bella"], "globex", "ops@globex.example")
    return {**users, "acme": acme, "globex": globex}


class _FormReader(HTMLParser):
    """Collects what a browser would submit from the page's main form."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}
        self._in_form = False
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("id", "").endswith("_form"):
            self._in_form = True
        name = a.get("name")
        if not self._in_form or "disabled" in a:
            if tag == "select":
                self._select = None
            return
        if tag == "input" and name and "__prefix__" not in name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.data[name] = a.get("value", "on")
            elif kind not in ("submit", "button"):
                self.data[name] = a.get("value", "")
        elif tag == "select" and name and "__prefix__" not in name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select":
            self._select = None


def page_form(client, url: str) -> dict[str, str]:
    """The POST data a browser sends for the form on ``url`` as rendered for this user."""
    response = client.get(url)
    assert response.status_code == 200
    reader = _FormReader()
    reader.feed(response.content.decode())
    return reader.data


def change_url(tenant: Tenant) -> str:
    return f"/admin/tenants/tenant/{tenant.pk}/change/"


def row_of(data: dict[str, str], membership: Membership) -> str:
    """The inline prefix (``memberships-N``) of the row showing ``membership``."""
    for key, value in data.items():
        if key.startswith("memberships-") and key.endswith("-id") and value == str(membership.pk):
            return key[: -len("-id")]
    raise AssertionError(f"no row for membership {membership.pk} in the form")


def add_row(data: dict[str, str], user: str, role: str) -> None:
    """Fill a new inline row, as the admin's "Add another Membership" link does."""
    index = int(data["memberships-TOTAL_FORMS"])
    data.update(
        {
            f"memberships-{index}-user": user,
            f"memberships-{index}-role": role,
            f"memberships-{index}-id": "",
            f"memberships-{index}-tenant": data.get("memberships-0-tenant", ""),
        }
    )
    data["memberships-TOTAL_FORMS"] = str(index + 1)


def role(tenant: Tenant, user) -> str | None:
    return (
        Membership.objects.filter(tenant=tenant, user=user).values_list("role", flat=True).first()
    )


def membership(world, name: str) -> Membership:
    return Membership.objects.get(tenant=world["acme"], user=world[name])


def post_as(client, user, tenant: Tenant, change) -> tuple[int, str]:
    """Log in as ``user``, load the tenant page, apply ``change`` to its form data and post it."""
    client.force_login(user)
    data = page_form(client, change_url(tenant))
    change(data)
    response = client.post(change_url(tenant), data)
    return response.status_code, response.content.decode()


# Admins: may manage admins and viewers, nothing about owners or themselves.


def test_admin_cannot_promote_itself_to_owner(client, world):
    def promote(data):
        data[f"{row_of(data, membership(world, 'adam'))}-role"] = "owner"

    status, page = post_as(client, world["adam"], world["acme"], promote)
    assert status == 200 and "Only an owner can change or remove your own membership" in page
    assert role(world["acme"], world["adam"]) == "admin"


def test_admin_cannot_promote_another_member_or_add_an_owner(client, world):
    def promote(data):
        data[f"{row_of(data, membership(world, 'vera'))}-role"] = "owner"

    status, page = post_as(client, world["adam"], world["acme"], promote)
    assert status == 200 and "Only an owner can make someone an owner" in page
    assert role(world["acme"], world["vera"]) == "viewer"

    status, page = post_as(
        client, world["adam"], world["acme"], lambda d: add_row(d, "newbie", "owner")
    )
    assert status == 200 and "Only an owner can make someone an owner" in page
    assert role(world["acme"], world["newbie"]) is None


def test_admin_cannot_delete_or_demote_the_owners_membership(client, world):
    def delete_owner(data):
        data[f"{row_of(data, membership(world, 'olivia'))}-DELETE"] = "on"

    status, page = post_as(client, world["adam"], world["acme"], delete_owner)
    assert status == 200 and "Only an owner can change or remove an owner membership" in page
    assert role(world["acme"], world["olivia"]) == "owner"

    def demote_owner(data):
        data[f"{row_of(data, membership(world, 'olivia'))}-role"] = "viewer"

    status, page = post_as(client, world["adam"], world["acme"], demote_owner)
    assert status == 200 and "Only an owner can change or remove an owner membership" in page
    assert role(world["acme"], world["olivia"]) == "owner"


def test_admin_cannot_deactivate_the_tenant_or_change_its_owner(client, world):
    def deactivate_and_take_over(data):
        data.pop("is_active", None)  # an unticked checkbox is not submitted
        data["owner"] = str(world["adam"].pk)
        data["email"] = "new@acme.example"  # a field admins may change

    status, _ = post_as(client, world["adam"], world["acme"], deactivate_and_take_over)
    assert status == 302
    acme = Tenant.objects.get(pk=world["acme"].pk)
    assert acme.is_active and acme.owner == world["olivia"]
    assert acme.email == "new@acme.example"


def test_admin_cannot_change_its_own_role(client, world):
    def demote_self(data):
        data[f"{row_of(data, membership(world, 'adam'))}-role"] = "viewer"

    status, page = post_as(client, world["adam"], world["acme"], demote_self)
    assert status == 200 and "Only an owner can change or remove your own membership" in page
    assert role(world["acme"], world["adam"]) == "admin"


def test_admin_manages_admins_and_viewers(client, world):
    def change(data):
        data[f"{row_of(data, membership(world, 'ada'))}-role"] = "viewer"
        data[f"{row_of(data, membership(world, 'vera'))}-DELETE"] = "on"
        add_row(data, "newbie@EXAMPLE.com", "admin")  # by e-mail, any case

    status, _ = post_as(client, world["adam"], world["acme"], change)
    assert status == 302
    acme = world["acme"]
    assert role(acme, world["ada"]) == "viewer" and role(acme, world["vera"]) is None
    assert role(acme, world["newbie"]) == "admin"


def test_viewer_cannot_post_the_tenant_form(client, world):
    client.force_login(world["olivia"])
    data = page_form(client, change_url(world["acme"]))  # an owner's full form, replayed
    data[f"{row_of(data, membership(world, 'vera'))}-role"] = "owner"
    data.pop("is_active")
    client.force_login(world["vera"])
    page = client.get(change_url(world["acme"])).content.decode()
    assert 'name="_save"' not in page
    assert client.post(change_url(world["acme"]), data).status_code == 403
    assert role(world["acme"], world["vera"]) == "viewer"
    assert Tenant.objects.get(pk=world["acme"].pk).is_active


# Owners: everything, within the tenant.


def test_owner_promotes_hands_over_and_deactivates(client, world):
    acme = world["acme"]

    def promote(data):
        data[f"{row_of(data, membership(world, 'adam'))}-role"] = "owner"

    assert post_as(client, world["olivia"], acme, promote)[0] == 302
    assert role(acme, world["adam"]) == "owner"

    def hand_over_and_step_down(data):
        data["owner"] = str(world["adam"].pk)
        data[f"{row_of(data, membership(world, 'olivia'))}-role"] = "viewer"
        data.pop("is_active")

    assert post_as(client, world["olivia"], acme, hand_over_and_step_down)[0] == 302
    acme.refresh_from_db()
    assert acme.owner == world["adam"] and not acme.is_active
    assert role(acme, world["olivia"]) == "viewer"


def test_owner_field_accepts_only_the_tenants_owners(client, world):
    acme = world["acme"]
    for outsider in ("bella", "vera"):  # another tenant's owner; a member who is no owner

        def forge(data, outsider=outsider):
            data["owner"] = str(world[outsider].pk)

        status, page = post_as(client, world["olivia"], acme, forge)
        assert status == 200 and "Choose one of this tenant&#x27;s owners" in page
        assert Tenant.objects.get(pk=acme.pk).owner == world["olivia"]


def test_tenant_pages_never_name_users_of_other_tenants(client, world):
    acme = world["acme"]
    client.force_login(world["olivia"])
    data = page_form(client, change_url(acme))
    data["owner"] = str(world["bella"].pk)
    client.post(change_url(acme), data)
    for url in (change_url(acme), "/admin/tenants/tenant/"):
        page = client.get(url).content.decode()
        assert "olivia" in page
        assert "bella" not in page and "newbie" not in page and "root" not in page


@pytest.mark.parametrize("model, field", [("membership", "user"), ("tenant", "owner")])
def test_user_autocomplete_is_closed_to_tenant_staff(client, world, model, field):
    client.force_login(world["olivia"])
    response = client.get(
        "/admin/autocomplete/",
        {"app_label": "tenants", "model_name": model, "field_name": field, "term": ""},
    )
    assert response.status_code == 403
    page = client.get(change_url(world["acme"])).content.decode()
    assert "admin-autocomplete" not in page


# Adding members by username or e-mail.


def test_unknown_or_inactive_users_cannot_be_added(client, world, django_user_model):
    django_user_model.objects.create_user("ghost", "ghost@example.com", None, is_active=False)
    for text in ("nobody-here", "ghost", "ghost@example.com"):
        status, page = post_as(
            client, world["olivia"], world["acme"], lambda d, t=text: add_row(d, t, "viewer")
        )
        assert status == 200 and "No active user has that username or e-mail" in page, text
    assert Membership.objects.filter(tenant=world["acme"]).count() == 4


def test_adding_an_existing_member_again_is_an_error(client, world):
    status, page = post_as(
        client, world["olivia"], world["acme"], lambda d: add_row(d, "vera", "admin")
    )
    assert status == 200 and "vera is already a member of this tenant" in page
    assert role(world["acme"], world["vera"]) == "viewer"


def test_existing_rows_cannot_be_moved_to_another_user(client, world):
    def move(data):
        data[f"{row_of(data, membership(world, 'vera'))}-user"] = "bella"

    status, page = post_as(client, world["olivia"], world["acme"], move)
    assert status == 200 and "The user of a membership cannot be changed" in page
    assert role(world["acme"], world["bella"]) is None


# A tenant always keeps an owner.


@pytest.mark.parametrize("actor", ["olivia", "root"])
def test_the_last_owner_cannot_be_removed_or_demoted_through_the_form(client, world, actor):
    acme = world["acme"]

    def remove(data):
        data[f"{row_of(data, membership(world, 'olivia'))}-DELETE"] = "on"

    def demote(data):
        data[f"{row_of(data, membership(world, 'olivia'))}-role"] = "admin"

    for change in (remove, demote):
        status, page = post_as(client, world[actor], acme, change)
        assert status == 200 and "olivia, the tenant&#x27;s owner" in page
        assert "A tenant always keeps at least one owner" in page
        assert role(acme, world["olivia"]) == "owner"


def test_last_owner_is_kept_at_the_model_layer(world):
    owner = membership(world, "olivia")
    Tenant.objects.filter(pk=world["acme"].pk).update(owner=world["adam"])  # legacy data
    with pytest.raises(ValidationError, match="last owner"):
        owner.delete()
    owner.role = "admin"
    with pytest.raises(ValidationError, match="last owner"):
        owner.save()
    assert role(world["acme"], world["olivia"]) == "owner"


def test_the_tenants_owner_keeps_the_owner_role_at_the_model_layer(world):
    second = membership(world, "adam")
    second.role = "owner"
    second.save()
    owner = membership(world, "olivia")
    owner.role = "viewer"
    with pytest.raises(ValidationError, match="they are the owner of tenant 'acme'"):
        owner.save()
    with pytest.raises(ValidationError, match="they are the owner of tenant 'acme'"):
        Membership.objects.get(pk=owner.pk).delete()
    second.role = "viewer"  # another owner may step down while olivia remains
    second.save()
    assert role(world["acme"], world["adam"]) == "viewer"


def test_superuser_picks_any_owner_who_becomes_an_owner_member(client, world):
    acme = world["acme"]

    def hand_over(data):
        data["owner"] = str(world["newbie"].pk)
        data[f"{row_of(data, membership(world, 'olivia'))}-DELETE"] = "on"

    assert post_as(client, world["root"], acme, hand_over)[0] == 302
    acme.refresh_from_db()
    assert acme.owner == world["newbie"] and role(acme, world["newbie"]) == "owner"
    assert role(acme, world["olivia"]) is None


def test_superuser_adds_a_tenant_whose_owner_becomes_its_owner_member(client, world):
    client.force_login(world["root"])
    data = page_form(client, "/admin/tenants/tenant/add/")
    data.update(name="initech", email="ops@initech.example", owner=str(world["adam"].pk))
    add_row(data, "vera", "viewer")
    assert client.post("/admin/tenants/tenant/add/", data).status_code == 302
    initech = Tenant.objects.get(name="initech")
    assert (role(initech, world["adam"]), role(initech, world["vera"])) == ("owner", "viewer")
