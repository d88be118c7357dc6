"""Cron input: read like cron, refused with a message naming the field, guarded on every write.

Fire times are checked against ``tests/cron_reference.py``, a matcher written from
crontab(5) that shares no code with ``scheduler.cron``.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db.models import F, Value
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from integrations.models import Integration
from scheduler.cron import next_fire, next_fires, prev_fire, seconds_first_warning, validate_cron
from scheduler.models import Task
from scheduler.preview import cron_preview
from tests import cron_reference as ref
from tests.test_admin_forms import task_form

UTC = dt.UTC
START = dt.datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)  # a Sunday


def reference_fires(expression: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    fires, wall = [], after.replace(tzinfo=None)
    for _ in range(count):
        wall = ref.next_after(expression, wall)
        fires.append(wall.replace(tzinfo=UTC))
    return fires


# --- equal-ended ranges -------------------------------------------------------------

LITERAL_EQUAL_RANGES = [
    "5-5 * * * *",
    "0 9 1-1 * *",
    "0 0 * * Mon-Mon",
    "0 0 * * mon-MON",
    "0 0 * * 7-7",
    "0 0 * * 0-0",
    "0 0 * * sun-sun",
    "5-5/10 * * * *",
    "0 0 1 jan-jan *",
    "0 0 * JAN-Jan *",
    "0 12-12 * * *",
    "0 0 1-1 * 1-1",  # both restricted: the 1st or a Monday
    "0 0 1-1/7 */2 *",
    "* * * * * 30-30",
    "0 0 * * * 5-5/10",
]


@pytest.mark.parametrize("cron", LITERAL_EQUAL_RANGES)
def test_an_equal_ended_range_is_that_one_value(cron):
    validate_cron(cron)
    fires = next_fires(cron, START, "UTC", 8)
    assert fires == reference_fires(cron, START, 8)
    assert all(ref.matches(cron, f.replace(tzinfo=None)) for f in fires)
    assert prev_fire(cron, fires[-1] - dt.timedelta(microseconds=1), "UTC") == fires[-2]


def test_equal_ranges_fire_as_often_as_the_single_value():
    """The same schedule as the plain value: N-N is N, not "every value"."""
    for ranged, plain in [
        ("5-5 * * * *", "5 * * * *"),
        ("0 9 1-1 * *", "0 9 1 * *"),
        ("0 0 * * Mon-Mon", "0 0 * * 1"),
        ("0 0 * * 7-7", "0 0 * * 0"),
        ("5-5/10 * * * *", "5 * * * *"),
    ]:
        assert next_fires(ranged, START, "UTC", 6) == next_fires(plain, START, "UTC", 6)


def test_a_day_of_week_range_may_end_on_sunday():
    fires = next_fires("0 0 * * sat-sun", START, "UTC", 4)
    assert [f.strftime("%a") for f in fires] == ["Sat", "Sun", "Sat", "Sun"]
    assert fires == next_fires("0 0 * * 6-7", START, "UTC", 4)


NAMES = {3: ref.MONTHS, 4: ref.DAYS}


def random_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))
    )


def spelled(index: int, value: int) -> st.SearchStrategy[str]:
    """``value`` as a number, or as a name in any case where the field has names."""
    names = NAMES.get(index)
    if names is None:
        return st.just(str(value))
    offset = 1 if index == 3 else 0
    if not 0 <= value - offset < len(names):
        return st.just(str(value))
    return st.just(str(value)) | random_case(names[value - offset])


def item(index: int) -> st.SearchStrategy[str]:
    low, high = ref.BOUNDS[index]
    if index == 2:
        high = 28  # every month has these days: the expression always fires
    value = st.integers(low, high)
    step = st.integers(1, high - low + 1).map(lambda s: f"/{s}")
    maybe_step = st.just("") | step
    equal = st.tuples(value, maybe_step).flatmap(
        lambda v: st.tuples(spelled(index, v[0]), spelled(index, v[0])).map(
            lambda names: f"{names[0]}-{names[1]}{v[1]}"
        )
    )
    ordered = st.tuples(value, value, maybe_step).filter(lambda v: v[0] < v[1])
    return st.one_of(
        equal,
        equal,
        st.just("*"),
        step.map(lambda s: f"*{s}"),
        value.flatmap(lambda v: spelled(index, v)),
        ordered.map(lambda v: f"{v[0]}-{v[1]}{v[2]}"),
        st.tuples(value, step).map(lambda v: f"{v[0]}{v[1]}"),
    )


def cron_field(index: int) -> st.SearchStrategy[str]:
    return st.lists(item(index), min_size=1, max_size=3).map(",".join)


EQUAL_RANGE = re.compile(r"(?:^|[ ,])(\w+)-(\w+)(?:/\d+)?(?=$|[ ,])")


def has_equal_range(expression: str) -> bool:
    return any(a.lower() == b.lower() for a, b in EQUAL_RANGE.findall(expression))


crons = st.one_of(
    st.tuples(*(cron_field(i) for i in range(5))),
    st.tuples(*(cron_field(i) for i in range(6))),
).map(" ".join)
instants = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2028, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=400, deadline=None)
@given(cron=crons, after=instants)
def test_next_fire_follows_cron_semantics(cron, after):
    assume(has_equal_range(cron))
    validate_cron(cron)
    expected = ref.next_after(cron, after.replace(tzinfo=None))
    assert expected is not None
    result = next_fire(cron, after, "UTC")
    assert result == expected.replace(tzinfo=UTC)
    assert prev_fire(cron, result, "UTC") == result
    assert prev_fire(cron, result - dt.timedelta(microseconds=1), "UTC") <= after


# --- messages that name the field and the token -------------------------------------

BAD = [
    ("61 * * * *", "minute", "61 is out of range 0-59"),
    ("0 24 * * *", "hour", "24 is out of range 0-23"),
    ("0 2x * * *", "hour", "'2x' is not a number"),
    ("0 0 32 * *", "day-of-month", "32 is out of range 1-31"),
    ("0 0 0 * *", "day-of-month", "0 is out of range 1-31"),
    ("0 0 * 13 *", "month", "13 is out of range 1-12"),
    ("0 0 * jnu *", "month", "'jnu' is not a month name (jan-dec or 1-12)"),
    ("0 0 * 5-3 *", "month", "range 5-3 goes backwards"),
    ("0 0 * * 8", "day-of-week", "8 is out of range 0-7"),
    ("0 0 * * Mox", "day-of-week", "'Mox' is not a day name (mon-sun or 0-7)"),
    ("0 0 * * monday", "day-of-week", "'monday' is not a day name"),
    ("0 0 * * wed-mon", "day-of-week", "range wed-mon goes backwards"),
    ("* * * * * 60", "second", "60 is out of range 0-59"),
    ("0 0 * * * MON-FRI", "second", "'MON' is not a number"),
    ("*/0 * * * *", "minute", "step '0' in '*/0'"),
    ("0 */25 * * *", "hour", "step '25' in '*/25'"),
    ("1,,2 * * * *", "minute", "'1,,2' has an empty item"),
    ("-5 * * * *", "minute", "'-5' is negative"),
    ("0 0 15W * *", "day-of-month", "'15W' (nearest weekday) is not supported"),
    ("0 0 20-L * *", "day-of-month", "'20-L'"),
    ("0 L * * *", "hour", "'L' (last)"),
    ("0 0 H * *", "day-of-month", "'H' (a hashed or random value)"),
    ("0 12 ? * MON", "day-of-month", "'?' is Quartz syntax"),
    ("0 0 12 * * ?", "second", "'?' is Quartz syntax"),
    ("0 0 * * 5#6", "day-of-week", "'5#6'"),
    ("0 0 1 * 5#2", "day-of-week", "'5#2' (n-th or last weekday) needs '*' as day-of-month"),
    ("0 0 * * 5#2,5", "day-of-week", "'5#2,5' mixes plain days"),
    ("0 0 * * 5L", "day-of-week", "'5L'"),
    ("0\u00a00 * * * *", "minute", "special space"),
]


def field_problem(message: str, field: str) -> str:
    problems = message.split("is not a valid cron expression: ", 1)[1].split(". Fields are")[0]
    return next(p for p in problems.split("; ") if p.startswith(f"{field}: "))


@pytest.mark.parametrize(("cron", "field", "problem"), BAD)
def test_bad_expression_message_names_field_and_token(cron, field, problem):
    with pytest.raises(ValidationError) as exc:
        validate_cron(cron)
    message = exc.value.messages[0]
    assert problem in field_problem(message, field)
    assert "is not acceptable" not in message
    preview = cron_preview(cron, "UTC", now=START)
    assert not preview["ok"] and problem in preview["error"]


def test_every_bad_field_is_reported():
    with pytest.raises(ValidationError) as exc:
        validate_cron("61 25 * * *")
    message = exc.value.messages[0]
    assert "61" in field_problem(message, "minute") and "25" in field_problem(message, "hour")


def test_seconds_error_says_seconds_come_last():
    with pytest.raises(ValidationError, match="seconds, written last"):
        validate_cron("0 0 9 * * MON")


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 0 L * *", ["2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30"]),
        ("0 0 L 2 *", ["2027-02-28", "2028-02-29", "2029-02-28"]),
        ("0 0 * * fri#2", ["2026-03-13", "2026-04-10", "2026-05-08", "2026-06-12"]),
        ("0 0 * * Lfri", ["2026-03-27", "2026-04-24", "2026-05-29", "2026-06-26"]),
    ],
)
def test_accepted_extras_fire_on_the_right_days(cron, expected):
    fires = next_fires(cron, START, "UTC", len(expected))
    assert [f.strftime("%Y-%m-%d") for f in fires] == expected


# --- shorthands ---------------------------------------------------------------------

SHORTHANDS = {  # crontab(5)
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@pytest.mark.parametrize("alias", SHORTHANDS)
def test_shorthands_are_accepted_and_fire_like_their_five_fields(alias):
    validate_cron(alias)
    validate_cron(alias.upper())
    expected = reference_fires(SHORTHANDS[alias], START, 3)
    assert next_fires(alias, START, "UTC", 3) == expected
    preview = cron_preview(alias, "UTC", now=START)
    assert preview["ok"], preview
    assert preview["description"] == cron_preview(SHORTHANDS[alias], "UTC")["description"]
    assert [r["utc"] for r in preview["next"][:3]] == [
        f.strftime("%Y-%m-%d %H:%M:%S UTC") for f in expected
    ]


def test_reboot_is_refused_with_the_reason():
    with pytest.raises(ValidationError) as exc:
        validate_cron("@reboot")
    assert "'@reboot' runs a job when the cron daemon starts" in exc.value.messages[0]


def test_unknown_shorthand_lists_the_known_ones():
    with pytest.raises(ValidationError) as exc:
        validate_cron("@every 5m")
    assert "not a known shorthand" in exc.value.messages[0]
    assert "@hourly" in exc.value.messages[0]


# --- seconds-first warnings ---------------------------------------------------------


@pytest.mark.parametrize("cron", ["0 0 12 * * *", "0 */5 * * * *", "0 0 9 * * 1-5"])
def test_seconds_first_looking_expression_warns(cron):
    warning = seconds_first_warning(cron)
    assert warning and "seconds-first" in warning and "seconds come last" in warning
    preview = cron_preview(cron, "UTC", now=START)
    assert preview["ok"] and preview["warnings"] == [warning]


@pytest.mark.parametrize(
    "cron", ["0 12 * * *", "0 0 * * * 30", "* * * * * *", "*/5 * * * * 0,30", "@daily"]
)
def test_plain_expressions_do_not_warn(cron):
    assert seconds_first_warning(cron) is None
    assert cron_preview(cron, "UTC", now=START)["warnings"] == []


def test_the_warning_suggests_the_seconds_last_form():
    warning = seconds_first_warning("0 30 9 * * *")
    assert "write '30 9 * * * 0'" in warning
    # The suggestion is what a seconds-first reader meant: 09:30:00 every day.
    assert next_fires("30 9 * * * 0", START, "UTC", 2) == [
        dt.datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        dt.datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
    ]


@pytest.fixture
def root_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    return client


@pytest.mark.django_db
def test_preview_json_carries_the_warning(root_client):
    data = root_client.get(
        "/admin/scheduler/task/cron-preview/", {"cron": "0 0 12 * * *", "timezone": "UTC"}
    ).json()
    assert data["ok"] and len(data["warnings"]) == 1 and "seconds-first" in data["warnings"][0]
    plain = root_client.get("/admin/scheduler/task/cron-preview/", {"cron": "0 12 * * *"}).json()
    assert plain["ok"] and plain["warnings"] == []


@pytest.mark.django_db
def test_admin_save_shows_the_warning_and_still_saves(root_client, tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = root_client.post(
        "/admin/scheduler/task/add/", task_form(integration, cron="0 0 12 * * *")
    )
    assert response.status_code == 302
    task = Task.objects.get()
    assert task.cron == "0 0 12 * * *"
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert any(tag == "warning" and "seconds-first" in text for tag, text in shown), shown
    page = root_client.get(f"/admin/scheduler/task/{task.pk}/change/").content.decode()
    assert 'id="cron-warnings"' in page and "seconds-first" in page


@pytest.mark.django_db
def test_admin_save_of_a_plain_cron_shows_no_warning(root_client, tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = root_client.post("/admin/scheduler/task/add/", task_form(integration))
    assert response.status_code == 302
    assert not [m for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]


@pytest.mark.django_db
def test_admin_form_shows_the_field_message(root_client, tenant):
    integration = Integration.objects.create(name="github", tenant=tenant)
    response = root_client.post(
        "/admin/scheduler/task/add/", task_form(integration, cron="0 0 * * Mox")
    )
    assert response.status_code == 200
    assert "day-of-week: &#x27;Mox&#x27; is not a day name" in response.content.decode()
    assert not Task.objects.exists()


# --- writes that skip full_clean ------------------------------------------------------


@pytest.fixture
def integration(db, tenant):
    return Integration.objects.create(name="github", tenant=tenant, config={"org": "acme"})


@pytest.fixture
def task(integration):
    return integration.add_task("get_users", "*/5 * * * *")


def snapshot(model):
    return list(model.objects.order_by("pk").values())


def full_clean_message(task: Task, cron: str) -> dict:
    task.cron = cron
    with pytest.raises(ValidationError) as exc:
        task.full_clean()
    return {"cron": exc.value.message_dict["cron"]}


@pytest.mark.django_db
def test_create_with_an_unknown_integration_type_is_refused(tenant):
    with pytest.raises(ValidationError) as exc:
        Integration.objects.create(name="gitlab", tenant=tenant)
    assert "Unknown integration type 'gitlab'" in " ".join(exc.value.message_dict["name"])
    with pytest.raises(ValidationError):
        Integration(name="gitlab", tenant=tenant).save()
    with pytest.raises(ValidationError):
        Integration.objects.get_or_create(name="gitlab", tenant=tenant)
    assert not Integration.objects.exists()


@pytest.mark.django_db
def test_integration_save_message_is_full_cleans(tenant):
    integration = Integration(name="gitlab", tenant=tenant)
    with pytest.raises(ValidationError) as cleaned:
        integration.full_clean()
    with pytest.raises(ValidationError) as saved:
        integration.save()
    assert saved.value.message_dict == {"name": cleaned.value.message_dict["name"]}


@pytest.mark.parametrize(
    "write",
    [
        lambda i: Integration.objects.filter(pk=i.pk).update(name="gitlab"),
        lambda i: Integration.objects.update(name=Value("gitlab")),
        lambda i: Integration.objects.update(name=F("config")),
        lambda i: i.tenant.integrations.update(name="gitlab"),
        lambda i: Integration.objects.bulk_create([Integration(name="gitlab", tenant=i.tenant)]),
        lambda i: Integration.objects.bulk_update([Integration(pk=i.pk, name="x")], ["name"]),
    ],
    ids=["update", "update-value", "update-expression", "related", "bulk_create", "bulk_update"],
)
def test_bulk_writes_of_an_unknown_integration_type_are_refused(integration, write):
    before = snapshot(Integration)
    with pytest.raises(ValidationError) as exc:
        write(integration)
    assert "name" in exc.value.message_dict
    assert snapshot(Integration) == before


@pytest.mark.django_db
def test_task_create_with_an_invalid_cron_is_refused(integration):
    expected = full_clean_message(Task(integration=integration, name="get_users"), "61 * * * *")
    with pytest.raises(ValidationError) as exc:
        Task.objects.create(integration=integration, name="get_users", cron="61 * * * *")
    assert exc.value.message_dict == expected
    assert "minute: 61 is out of range" in expected["cron"][0]
    assert not Task.objects.exists()


def test_task_save_of_an_invalid_cron_is_refused(task):
    before = snapshot(Task)
    expected = full_clean_message(Task.objects.get(), "0 0 31 2 *")
    task.cron = "0 0 31 2 *"
    with pytest.raises(ValidationError) as exc:
        task.save()
    assert exc.value.message_dict == expected
    with pytest.raises(ValidationError):
        task.save(update_fields=["cron"])
    assert snapshot(Task) == before


@pytest.mark.parametrize(
    "write",
    [
        lambda t: Task.objects.filter(pk=t.pk).update(cron="61 * * * *"),
        lambda t: Task.objects.update(cron=Value("@reboot")),
        lambda t: Task.objects.update(cron=F("name")),
        lambda t: t.integration.tasks.update(cron="0 0 * * Mox"),
        lambda t: Task.objects.bulk_create(
            [Task(integration=t.integration, tenant=t.tenant, name="get_users", cron="* *")]
        ),
        lambda t: Task.objects.bulk_update([Task(pk=t.pk, cron="5-3 * * * *")], ["cron"]),
        lambda t: Task.objects.update_or_create(pk=t.pk, defaults={"cron": "60 * * * *"}),
    ],
    ids=[
        "update",
        "update-value",
        "update-expression",
        "related",
        "bulk_create",
        "bulk_update",
        "update_or_create",
    ],
)
def test_bulk_writes_of_an_invalid_cron_are_refused(task, write):
    before = snapshot(Task)
    with pytest.raises(ValidationError) as exc:
        write(task)
    assert "cron" in exc.value.message_dict
    assert snapshot(Task) == before


def test_valid_bulk_writes_still_work(task):
    assert Task.objects.filter(pk=task.pk).update(cron="@hourly") == 1
    Task.objects.bulk_update([Task(pk=task.pk, cron="0 9 * * 1-5")], ["cron"])
    far = dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert Task.objects.update(next_run_at=far, enabled=False) == 1
    task.refresh_from_db()
    assert (task.cron, task.next_run_at, task.enabled) == ("0 9 * * 1-5", far, False)
    assert Integration.objects.update(enabled=False, name="github") == 1
