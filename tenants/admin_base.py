"""The base classes of every Metronome ModelAdmin: a closed query surface, tenant scoping.

``AllowlistedQueryAdmin`` accepts on a changelist exactly the query parameters its own
declarations produce (see the section comment below); ``TenantScopedAdmin`` adds the
per-tenant scoping of ``tenants.access`` to it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import admin
from django.contrib.admin import (
    AllValuesFieldListFilter,
    BooleanFieldListFilter,
    ChoicesFieldListFilter,
    DateFieldListFilter,
    EmptyFieldListFilter,
    FieldListFilter,
    RelatedFieldListFilter,
    RelatedOnlyFieldListFilter,
    SimpleListFilter,
)
from django.contrib.admin.exceptions import DisallowedModelAdminLookup, DisallowedModelAdminToField
from django.contrib.admin.options import (
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    TO_FIELD_VAR,
    IncorrectLookupParameters,
)
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.db.models import F, ForeignKey, ForeignObjectRel, Model, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.db.models.fields.related import RelatedField
from django.forms import ModelChoiceField
from django.http import Http404, HttpRequest, HttpResponseBadRequest

from tenants.access import (
    AccessUser,
    can_edit,
    can_view,
    editable_tenant_ids,
    scope,
    tenant_roles,
)
from tenants.models import Locker, Tenant

if TYPE_CHECKING:
    from django.contrib.admin.options import _ListDisplayT, _ListFilterT

# --- The admin's query surface -------------------------------------------------------------
#
# A changelist turns its query string into SQL: every filter, search and ordering the page
# accepts is a question a user may ask about rows, and a count of matches answers it. Asked
# about a secret column (``?value__gte=gAAAA…`` on Lockers) it leaks the column byte by byte.
# So each admin accepts exactly the parameters its own declarations produce, and nothing else:
#
# * the parameters of its ``list_filter`` entries (a SimpleListFilter's ``parameter_name``; a
#   field filter's own lookups, e.g. ``tenant__id__exact``/``tenant__isnull`` for a
#   RelatedOnlyFieldListFilter on ``tenant``, ``enabled__exact``/``enabled__isnull`` for a
#   boolean), and ``<date_hierarchy>__year/__month/__day``;
# * ``q`` (when it has ``search_fields``), ``o`` (only indexes of sortable ``list_display``
#   columns), ``p``, ``all``, ``e``, ``_facets``, ``_popup`` and ``_to_field`` (which Django
#   checks against the fields other models point to).
#
# Anything else, a value holding a NUL byte, a value outside a choices filter's choices, or an
# ``o`` naming a column that cannot be sorted answers 400 with a plain-text message saying what
# the list accepts, before any query runs (Django's DisallowedModelAdminLookup); so does a bad
# filter value or page, and an add form's initial value (``add/?integration=abc``) that is not
# an id. Secret columns (``SECRET_COLUMNS``) may appear in no filter, search field, ordering or
# date hierarchy: the system check ``metronome.E001`` refuses such a declaration at start-up,
# and ``metronome.E002`` a list filter whose choices would come from every tenant. What each
# admin accepts is listed in ``admin_query_reference()`` (and in its docstring).

#: Columns no admin may filter, search, order or group on, whoever asks: Locker values are
#: write-only for everyone, password hashes are credentials.
SECRET_COLUMNS: dict[str, frozenset[str]] = {
    "tenants.locker": frozenset(Locker.secret_fields),
    "auth.user": frozenset({"password"}),
}

#: Parameters every changelist understands (Django's own), besides its filters and ``q``.
STANDARD_QUERY_PARAMS = frozenset(
    {ALL_VAR, ORDER_VAR, PAGE_VAR, ERROR_FLAG, IS_FACETS_VAR, IS_POPUP_VAR, TO_FIELD_VAR}
)

_ORDER_PART = re.compile(r"-?[0-9]{1,4}")

# Field filter classes -> the lookups they read, for a filter on ``path`` (first match wins,
# so subclasses come before their bases).
_FIELD_FILTER_LOOKUPS: tuple[tuple[type[FieldListFilter], tuple[str, ...]], ...] = (
    (RelatedFieldListFilter, ("__{target}__exact", "__isnull")),
    (BooleanFieldListFilter, ("__exact", "__isnull")),
    (ChoicesFieldListFilter, ("__exact", "__isnull")),
    (DateFieldListFilter, ("__gte", "__lt", "__isnull")),
    (AllValuesFieldListFilter, ("", "__isnull")),
    (EmptyFieldListFilter, ("__isempty",)),
)


def secret_in_path(model: type[Model], path: str) -> str | None:
    """The secret column (``"tenants.Locker.value"``) an ORM path reaches, or None.

    Follows relations both ways (``tenant__lockers__value``, ``owner__password``); what
    follows the last field (``__gte``, ``__startswith``) is a lookup and does not matter.
    """
    for part in path.lstrip("-").split(LOOKUP_SEP):
        try:
            field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return None
        if field.name in SECRET_COLUMNS.get(model._meta.label_lower, ()):
            return f"{model._meta.label}.{field.name}"
        if not field.is_relation or field.related_model is None:
            return None
        model = field.related_model
    return None


def _filter_class(model: type[Model], item: Any) -> tuple[str, Any, type[FieldListFilter]]:
    path, filter_class = item if isinstance(item, (list, tuple)) else (item, None)
    field = get_fields_from_path(model, path)[-1]
    if filter_class is None:
        # Django's registry of field filters (FieldListFilter.register); not in django-stubs.
        registry = FieldListFilter._field_list_filters  # type: ignore[attr-defined]
        filter_class = next(cls for test, cls in registry if test(field))
    return path, field, filter_class


def list_filter_parameters(model: type[Model], item: Any) -> frozenset[str]:
    """The query-string parameters one ``list_filter`` entry reads."""
    if isinstance(item, type) and issubclass(item, SimpleListFilter):
        if item.parameter_name is None:
            raise ImproperlyConfigured(
                f"{model._meta.label}: list filter {item.__name__} has no parameter_name; "
                "set it to the query-string parameter the filter reads."
            )
        return frozenset({item.parameter_name})
    path, field, filter_class = _filter_class(model, item)
    for base, suffixes in _FIELD_FILTER_LOOKUPS:
        if issubclass(filter_class, base):
            target = getattr(getattr(field, "target_field", None), "name", "")
            return frozenset(path + suffix.format(target=target) for suffix in suffixes)
    raise ImproperlyConfigured(
        f"{model._meta.label}: list filter {filter_class.__name__} on '{path}' is not one "
        "whose query parameters Metronome knows; use a SimpleListFilter (see ValuesFilter)."
    )


def _ordering_names(value: Any) -> list[str]:
    """Field paths an ordering (a name, '-name' or an expression) sorts on."""
    if isinstance(value, str):
        return [value.lstrip("-")]
    # F.name is set by F.__init__; django-stubs does not declare it.
    if isinstance(value, F):
        return [value.name]  # type: ignore[attr-defined]
    if hasattr(value, "flatten"):
        return [node.name for node in value.flatten() if isinstance(node, F)]  # type: ignore[attr-defined]
    return []


def reject_nul(what: str, value: str) -> None:
    """PostgreSQL text cannot hold NUL: say so with a 400 rather than fail with a 500."""
    if "\x00" in value:
        raise DisallowedModelAdminLookup(f"{what} contains a NUL byte; remove it.")


def _bad_request(exc: Exception) -> HttpResponseBadRequest:
    return HttpResponseBadRequest(f"{exc}\n", content_type="text/plain; charset=utf-8")


def _check_initial_value(model: type[Model], name: str, value: str) -> None:
    """Refuse an initial form value that is not an id of the related model (for a relation)."""
    reject_nul(f"Parameter '{name}'", value)
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return
    if not (field.many_to_one or field.one_to_one):
        return
    if not isinstance(field, RelatedField | ForeignObjectRel):
        return  # a GenericForeignKey: not a form field, so never an initial value
    target = field.target_field
    try:
        target.run_validators(target.to_python(value))
    except ValidationError:
        raise DisallowedModelAdminLookup(
            f"'{name}' takes the id of one of the "
            f"{field.related_model._meta.verbose_name_plural}, e.g. {name}=12; got {value[:40]!r}."
        ) from None


def _plain(exc: Exception) -> str:
    """An exception's message without the list brackets Django's ValidationError adds."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ValidationError):
        return " ".join(cause.messages)
    return str(exc)


def may_run_actions(user: AccessUser) -> bool:
    """Whether the user may edit some tenant, hence be offered admin actions at all."""
    return user.is_superuser or bool(editable_tenant_ids(user))


def _gated(get_actions: Callable[..., dict]) -> Callable[..., dict]:
    @functools.wraps(get_actions)
    def get_actions_if_allowed(self: Any, request: HttpRequest) -> dict:
        return get_actions(self, request) if may_run_actions(request.user) else {}

    get_actions_if_allowed.gated = True  # type: ignore[attr-defined]
    return get_actions_if_allowed


class AllowlistChangeList(ChangeList):
    """A changelist that refuses (400) every parameter its admin does not declare."""

    model_admin: AllowlistedQueryAdmin

    def __init__(
        self,
        request: HttpRequest,
        model: type[Model],
        list_display: _ListDisplayT[Any],
        list_display_links: _ListDisplayT[Any],
        list_filter: Sequence[_ListFilterT],
        date_hierarchy: str | None,
        search_fields: Sequence[str],
        list_select_related: bool | Sequence[str],
        list_per_page: int,
        list_max_show_all: int,
        list_editable: Sequence[str],
        model_admin: AllowlistedQueryAdmin,
        sortable_by: Sequence[Any],
        search_help_text: str | None,
    ) -> None:
        self.model, self.lookup_opts, self.model_admin = model, model._meta, model_admin
        self.check_query(request, list_display, sortable_by)
        super().__init__(
            request,
            model,
            list_display,
            list_display_links,
            list_filter,
            date_hierarchy,
            search_fields,
            list_select_related,
            list_per_page,
            list_max_show_all,
            list_editable,
            model_admin,
            sortable_by,
            search_help_text,
        )

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        try:
            return super().get_queryset(request, exclude_parameters)
        except IncorrectLookupParameters as exc:
            raise DisallowedModelAdminLookup(f"Invalid filter value: {_plain(exc)}") from None
        except OverflowError:  # a date hierarchy year/month/day out of range
            raise DisallowedModelAdminLookup(
                "Invalid filter value: a date out of range; years go from 1 to 9998."
            ) from None

    def get_filters(self, request: HttpRequest) -> Any:
        """Django's filters; a value a simple filter does not offer is refused (400)."""
        found = super().get_filters(request)
        for spec in found[0]:
            if not isinstance(spec, SimpleListFilter) or spec.value() is None:
                continue
            offered = {str(key) for key, _ in spec.lookup_choices}
            if spec.value() not in offered:
                raise DisallowedModelAdminLookup(
                    f"'{str(spec.value())[:40]}' is not a choice of the filter "
                    f"'{spec.parameter_name}'; it offers: {', '.join(sorted(offered)) or 'none'}."
                )
        return found

    def get_results(self, request: HttpRequest) -> None:
        try:
            super().get_results(request)
        except IncorrectLookupParameters:
            raise DisallowedModelAdminLookup(
                f"There is no page {request.GET.get(PAGE_VAR, '')[:20]!r} in this list; "
                "pages are numbered from 1."
            ) from None

    def check_query(
        self, request: HttpRequest, list_display: Sequence[Any], sortable_by: Sequence[Any]
    ) -> None:
        allowed = self.model_admin.changelist_query_params(request)
        choices = self.model_admin.filter_param_choices(request)
        for key, values in request.GET.lists():
            reject_nul("A parameter name", key)
            if key not in allowed:
                raise DisallowedModelAdminLookup(
                    f"This list cannot be filtered by '{key[:100]}'. "
                    f"It accepts: {', '.join(sorted(allowed))}."
                )
            for value in values:
                reject_nul(f"Parameter '{key}'", value)
                if key in choices and value not in choices[key]:
                    raise DisallowedModelAdminLookup(
                        f"'{key}' must be one of: {', '.join(sorted(choices[key]))}."
                    )
        for part in filter(None, request.GET.get(ORDER_VAR, "").split(".")):
            if not self._sortable(part, list_display, sortable_by):
                raise DisallowedModelAdminLookup(
                    f"Cannot sort by '{part[:20]}': '{ORDER_VAR}' takes the indexes of sortable "
                    "columns, e.g. o=1 or o=-2.1."
                )

    def _sortable(self, part: str, list_display: Sequence[Any], sortable_by: Sequence[Any]) -> bool:
        if not _ORDER_PART.fullmatch(part):
            return False
        index = int(part.lstrip("-"))
        if index >= len(list_display) or list_display[index] not in sortable_by:
            return False
        order_field = self.get_ordering_field(list_display[index])
        names = _ordering_names(order_field)
        return bool(names) and not any(secret_in_path(self.model, n) for n in names)


class AllowlistedQueryAdmin(admin.ModelAdmin):
    """Base of every Metronome ModelAdmin: an explicit allowlist of query parameters.

    See the section comment above. Also: searches refuse NUL bytes (400, not a database
    error); sortable columns exclude any whose ordering reaches a secret; and a user who
    may edit no tenant is offered no action at all, whatever a subclass's ``get_actions``
    adds (each subclass's ``get_actions`` is wrapped on definition).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("get_actions")
        if own is not None and not getattr(own, "gated", False):
            # Wrapped once, as the class is made; mypy refuses any assignment to a method.
            cls.get_actions = _gated(own)  # type: ignore[method-assign]

    @_gated
    def get_actions(self, request: HttpRequest) -> dict:
        return super().get_actions(request)

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        """The object, or 404 when it is missing or outside the user's tenants.

        Django's change, delete and history views redirect to the index with a message
        for a missing object; answering 404 alike for another tenant's object says
        nothing about whether it exists.
        """
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with id {object_id[:40]} here.")
        return obj

    def filter_query_params(self, request: HttpRequest | None = None) -> frozenset[str]:
        """The filter parameters of this admin: its list filters' and its date hierarchy's."""
        entries = self.get_list_filter(request) if request is not None else self.list_filter
        params: set[str] = set()
        for entry in entries:
            params |= list_filter_parameters(self.model, entry)
        if self.date_hierarchy:
            params |= {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        return frozenset(params)

    def filter_param_choices(self, request: HttpRequest | None = None) -> dict[str, frozenset[str]]:
        """Parameter -> accepted values, for filters on a field with fixed choices.

        Anything else is refused up front: an enum column (procrastinate's job status)
        would answer it with a database error.
        """
        entries = self.get_list_filter(request) if request is not None else self.list_filter
        found = {}
        for entry in entries:
            if isinstance(entry, type) and issubclass(entry, SimpleListFilter):
                continue
            path, field, filter_class = _filter_class(self.model, entry)
            if issubclass(filter_class, ChoicesFieldListFilter):
                found[f"{path}__exact"] = frozenset(str(key) for key, _ in field.flatchoices)
        return found

    def changelist_query_params(self, request: HttpRequest | None = None) -> frozenset[str]:
        """Every query-string parameter this admin's changelist accepts."""
        params = set(STANDARD_QUERY_PARAMS | self.filter_query_params(request))
        searchable = self.get_search_fields(request) if request else self.search_fields
        if searchable:
            params.add(SEARCH_VAR)
        return frozenset(params)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        """Answers a refused query with 400 and a message saying what the list accepts."""
        try:
            return super().changelist_view(request, extra_context)
        except (DisallowedModelAdminLookup, DisallowedModelAdminToField) as exc:
            return _bad_request(exc)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        """Answers junk initial values (``add/?integration=abc``) with 400 and a message."""
        try:
            return super().changeform_view(request, *args, **kwargs)
        except (DisallowedModelAdminLookup, DisallowedModelAdminToField) as exc:
            return _bad_request(exc)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Initial values from the query string, refused (400) when not of the field's type.

        Django would pass ``?integration=abc`` to the related widget's query: a 500.
        """
        initial = super().get_changeform_initial_data(request)
        for name, value in initial.items():
            for item in value if isinstance(value, list) else [value]:
                _check_initial_value(self.model, name, str(item))
        return initial

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        return (
            lookup in self.filter_query_params(request)
            and secret_in_path(self.model, lookup) is None
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AllowlistChangeList

    def get_sortable_by(self, request: HttpRequest) -> list[Any]:
        sortable = super().get_sortable_by(request)
        return [name for name in sortable if not self._orders_on_secret(name)]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        reject_nul("The search", search_term)
        return super().get_search_results(request, queryset, search_term)

    def _orders_on_secret(self, name: Any) -> bool:
        order_field = _ColumnResolver(self).get_ordering_field(name)
        return any(secret_in_path(self.model, n) for n in _ordering_names(order_field))

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [*super().check(**kwargs), *self._check_query_surface()]

    def _check_query_surface(self) -> list[checks.CheckMessage]:
        """metronome.E001: no query surface reaches a secret; E002: filter choices are scoped."""
        problems: list[str] = []
        paths = {f"search_fields '{s}'": s.lstrip("^=@") for s in self.search_fields}
        paths |= {f"ordering '{o}'": o for o in self.ordering or () if isinstance(o, str)}
        if self.date_hierarchy:
            paths[f"date_hierarchy '{self.date_hierarchy}'"] = self.date_hierarchy
        for name in self.list_display:
            if self._orders_on_secret(name):
                problems.append(f"list_display column {name!r} sorts on a secret column")
        for entry in self.list_filter:
            try:
                params = list_filter_parameters(self.model, entry)
            except ImproperlyConfigured as exc:
                problems.append(str(exc))
                continue
            paths |= {f"list_filter parameter '{p}'": p for p in params}
            if not (isinstance(entry, type) and issubclass(entry, SimpleListFilter)):
                path, _, filter_class = _filter_class(self.model, entry)
                unscoped = (
                    issubclass(filter_class, RelatedFieldListFilter)
                    and not issubclass(filter_class, RelatedOnlyFieldListFilter)
                ) or (issubclass(filter_class, AllValuesFieldListFilter) and LOOKUP_SEP in path)
                if unscoped:
                    problems.append(
                        f"list_filter '{path}' ({filter_class.__name__}) lists choices from "
                        "every tenant; use RelatedOnlyFieldListFilter or a ValuesFilter"
                    )
        for where, path in paths.items():
            secret = secret_in_path(self.model, path)
            if secret:
                problems.append(f"{where} reaches the secret column {secret}")
        return [
            checks.Error(
                f"{type(self).__name__}: {problem}.",
                hint="Secret columns are never filtered, searched or sorted on; filter "
                "choices come from the admin's own (tenant-scoped) queryset.",
                obj=type(self),
                id="metronome.E002" if "every tenant" in problem else "metronome.E001",
            )
            for problem in problems
        ]


class _ColumnResolver(ChangeList):
    """A ChangeList without a request, for an admin's columns: it sets only what
    ``get_ordering_field`` reads (ChangeList's own ``__init__`` would run the query)."""

    def __init__(self, model_admin: admin.ModelAdmin) -> None:
        self.model_admin, self.model = model_admin, model_admin.model
        self.lookup_opts = model_admin.model._meta


class ValuesFilter(admin.SimpleListFilter):
    """Distinct values of ``field_path`` among the rows the user may see, as filter choices.

    Django's AllValuesFieldListFilter reads a related model's whole table (every tenant's
    values) as soon as the path crosses a relation; this one asks the admin's own, scoped
    queryset. Make one with ``ValuesFilter.of("integration__name", "integration type")``.
    """

    field_path: str = ""
    labels: ClassVar[dict[str, str]] = {}

    @classmethod
    def of(
        cls,
        field_path: str,
        title: str,
        parameter_name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> type[ValuesFilter]:
        attrs = {
            "field_path": field_path,
            "title": title,
            "parameter_name": parameter_name or field_path,
            "labels": dict(labels or {}),
        }
        return type(f"ValuesFilter_{field_path}", (cls,), attrs)

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        values = (
            model_admin.get_queryset(request)
            .order_by()
            .values_list(self.field_path, flat=True)
            .distinct()
        )
        present = sorted({str(v) for v in values if v not in (None, "")})
        return [(v, self.labels.get(v, v)) for v in present]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.field_path: value})


class TenantFilter(admin.SimpleListFilter):
    """The tenants the user may see, as filter choices on the row's ``tenant``.

    For lists too large to ask which tenants their rows have (Django's
    RelatedOnlyFieldListFilter reads every row's tenant): the choices come from the user's
    memberships, and a value outside them is refused like any value a filter does not offer.
    """

    title = "tenant"
    parameter_name = "tenant__id__exact"  # as RelatedOnlyFieldListFilter's, on other lists

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        tenants = scope(Tenant.objects.order_by("name", "id"), request.user, "id")
        return [(str(pk), name) for pk, name in tenants.values_list("id", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset if value is None else queryset.filter(tenant_id=value)


def admin_query_reference(site: admin.AdminSite | None = None) -> dict[str, list[str]]:
    """Model label -> the query parameters its changelist accepts (for the docs and tests).

    Besides ``o``, ``p``, ``all``, ``e``, ``_facets``, ``_popup`` and ``_to_field``, each
    admin accepts exactly these filter parameters and searches (``q``) these fields:

    tenants.Tenant: is_active__exact is_active__isnull | search: name email
    tenants.Locker: tenant__id__exact tenant__isnull | search: key tenant__name
    integrations.Integration: name enabled__exact enabled__isnull tenant__id__exact
        tenant__isnull | search: name tenant__name
    github.GithubUser: tenant__id__exact tenant__isnull site_admin__exact
        site_admin__isnull | search: login
    scheduler.Task: tenant__id__exact tenant__isnull integration__name enabled__exact
        enabled__isnull paused last_status | search: name cron tenant__name integration__name
    scheduler.TaskRun: status__exact status__isnull manual__exact manual__isnull
        enqueued_at__gte enqueued_at__lt enqueued_at__isnull tenant__id__exact
        | search: task__name error
    procrastinate.ProcrastinateJob: status__exact status__isnull queue task_name system
        | search: task_name queue_name
    scheduler.SchedulerTick: started_at__year started_at__month started_at__day | search:
    audit.AuditEntry: action model tenant__id__exact tenant__isnull
        | search: object_repr username

    ``queue`` is a tenant's queue (its id); ``system`` is show/only (system jobs are hidden
    without it); ``paused`` is yes/no; ``last_status`` a run status
    or ``none``; ``integration__name``, ``name``, ``task_name``, ``action`` and ``model``
    offer the values present in the user's tenants. Django's own User and Group admins
    (superusers only) are not listed.
    """
    site = site or admin.site
    return {
        model._meta.label: sorted(model_admin.changelist_query_params())
        for model, model_admin in site._registry.items()
        if isinstance(model_admin, AllowlistedQueryAdmin)
    }


class TenantScopedAdmin(AllowlistedQueryAdmin):
    """ModelAdmin whose rows belong to a tenant reachable through ``tenant_path``.

    Staff members get access from their memberships rather than Django permissions;
    another tenant's object answers 404, and foreign-key choices list only tenants
    (and their objects) the user may edit.
    """

    tenant_path = "tenant"  # ORM path from the model to its Tenant (id)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope(super().get_queryset(request), request.user, self.tenant_path)

    def tenant_id_of(self, obj: Model) -> int | None:
        value: Any = obj
        for part in self.tenant_path.split("__"):
            value = getattr(value, part, None)
            if value is None:
                return None
        return value.pk if isinstance(value, Tenant) else value

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or bool(tenant_roles(request.user))

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is None:
            return self.has_module_permission(request)
        return can_view(request.user, self.tenant_id_of(obj))

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is None:
            return may_run_actions(request.user)
        return can_edit(request.user, self.tenant_id_of(obj))

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        related = db_field.related_model
        ids = editable_tenant_ids(request.user)
        if field is not None and ids is not None:
            queryset = field.queryset
            if queryset is None:
                raise ImproperlyConfigured(
                    f"{type(self).__name__}: the form field of '{db_field.name}' has no "
                    "queryset to limit to the user's tenants; give it one."
                )
            if related is Tenant:
                field.queryset = queryset.filter(pk__in=ids)
            elif any(f.name == "tenant" for f in related._meta.fields):
                field.queryset = queryset.filter(tenant_id__in=ids)
        return field
