"""The tick's planning, and the catch-up and overlap policies, without a database.

Property-based: hypothesis draws ticks (a time, the scheduler's period, up to four due
Tasks with their crons, zones, lateness and policies, some paused or broken), the runs
that already exist and those still queued or running, and checks what any plan must be.
Fire times are checked through ``next_fire`` only (itself checked against an independent
matcher in tests/test_cron_properties.py), never through the functions the planner uses
to choose them (``prev_fire``, ``count_fires``). pytest-django refuses database access
here: none of this may touch one.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cron import fires_between, next_fire, prev_fire
from scheduler.planner import (
    STEPS,
    DueTask,
    RunToDefer,
    TaskCode,
    TickPlan,
    draft,
    plan,
)
from scheduler.policies import plan_overlap

UTC = dt.UTC
MICRO = dt.timedelta(microseconds=1)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

#: (cron, the longest lateness drawn for it): listing every fire of the brute-force count
#: stays affordable.
CRONS = [
    ("* * * * *", 40 * MINUTE),
    ("*/5 * * * *", 3 * HOUR),
    ("15,45 * * * *", DAY),
    ("0 * * * *", 3 * DAY),
    ("30 2 * * *", 20 * DAY),  # inside Europe's spring-forward gap once a year
    ("0 9 * * mon-fri", 20 * DAY),
    ("0 0 1 * *", 90 * DAY),
    ("* * * * * */20", 10 * MINUTE),  # every 20 seconds
    ("0 1 * * *", 20 * DAY),  # inside America/New_York's repeated hour once a year
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
#: DST changes of 2026 (UTC), where local times vanish or repeat.
TRANSITIONS = [
    dt.datetime(2026, 3, 8, 7, tzinfo=UTC),  # America/New_York, spring forward
    dt.datetime(2026, 3, 29, 1, tzinfo=UTC),  # Europe/Paris, spring forward
    dt.datetime(2026, 10, 25, 1, tzinfo=UTC),  # Europe/Paris, fall back
    dt.datetime(2026, 11, 1, 6, tzinfo=UTC),  # America/New_York, fall back
    dt.datetime(2026, 4, 4, 15, tzinfo=UTC),  # Australia/Lord_Howe, 30 minutes back
]
PERIODS = [dt.timedelta(seconds=s) for s in (1, 10, 60, 300)]


@dataclass(frozen=True)
class Tick:
    now: dt.datetime
    grace: dt.timedelta
    tasks: tuple[DueTask, ...]
    code: Mapping[int, TaskCode]


instants = st.one_of(
    st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda anchor, shift: anchor + shift,
        st.sampled_from(TRANSITIONS),
        st.timedeltas(-2 * DAY, 2 * DAY),
    ),
)
kwargs_values = st.sampled_from([{}, {"since_days": 7}, {"org": "acme", "teams": ["a", "b"]}])


#: What a Task is made of, apart from its id and the tick's time.
task_fields = st.fixed_dictionaries(
    {
        "cron_and_longest": st.sampled_from(CRONS),
        "zone": st.sampled_from(ZONES),
        "behind": st.one_of(st.just(0.0), st.floats(0, 1)),  # share of the longest lateness
        "kwargs": kwargs_values,
        "catchup": st.sampled_from(["skip", "latest", "all"]),
        "catchup_window": st.timedeltas(MINUTE, 2 * DAY),
        "catchup_max": st.integers(1, 40),
        "overlap": st.sampled_from(["skip", "buffer_one", "allow"]),
        "max_attempts": st.integers(1, 5),
        "retry_backoff": st.timedeltas(dt.timedelta(0), HOUR),
        "blocked": st.sampled_from([None] * 8 + ["paused", "owner_blocked"]),
        "plan_error": st.sampled_from(["", "Finding the task's code failed: gone."]),
    }
)


def due_task(pk: int, now: dt.datetime, fields: dict, blocked: bool) -> DueTask:
    """A Task due at ``now``: its ``next_run_at`` is a fire time at or before ``now``, as
    the scheduler leaves it, up to the cron's longest lateness behind."""
    cron, longest = fields["cron_and_longest"]
    zone = fields["zone"]
    state = fields["blocked"] if blocked else None
    return DueTask(
        pk=pk,
        integration_id=100 + pk,
        tenant_id=1000 + pk % 3,
        name="get_users",
        cron=cron,
        zone=zone,
        kwargs=fields["kwargs"],
        next_run_at=prev_fire(cron, now - fields["behind"] * longest, zone),
        catchup=fields["catchup"],
        catchup_window=fields["catchup_window"],
        catchup_max=fields["catchup_max"],
        overlap=fields["overlap"],
        max_attempts=fields["max_attempts"],
        retry_backoff=fields["retry_backoff"],
        paused=state == "paused",
        owner_blocked=state == "owner_blocked",
        integration_type="github",
        plan_error=fields["plan_error"],
    )


def code_for(task: DueTask) -> TaskCode:
    return TaskCode(procrastinate_task=f"{task.integration_type}.{task.name}")


MAX_TASKS = 4
periods = st.sampled_from(PERIODS)
task_lists = st.lists(task_fields, min_size=1, max_size=MAX_TASKS)
#: Which candidate (task, fire) pairs already have a run: bit i for the i-th pair.
done_bits = st.one_of(st.just(0), st.integers(0, 2**256 - 1))
counts = st.lists(st.sampled_from([0, 0, 1, 2]), min_size=MAX_TASKS, max_size=MAX_TASKS)


@st.composite
def ticks(draw, blocked: bool = True) -> Tick:
    now = draw(instants)
    period = draw(periods)
    if draw(st.booleans()):  # a tick on time: at a multiple of the period
        seconds = int(period.total_seconds())
        now = dt.datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)
    tasks = tuple(
        due_task(pk, now, fields, blocked) for pk, fields in enumerate(draw(task_lists), 1)
    )
    code = {task.pk: code_for(task) for task in tasks if not task.blocked}
    return Tick(now, period, tasks, code)


@st.composite
def ticks_with_runs(draw, blocked: bool = True) -> tuple[Tick, frozenset, dict, dict]:
    """A tick, the (task, fire) pairs among its candidates that already have a run, and
    the runs queued and running per Task."""
    tick = draw(ticks(blocked))
    drafted = draft(tick.tasks, now=tick.now, grace=tick.grace, code=tick.code)
    pairs = [(c.task.pk, when) for c in drafted.candidates for when in c.catchup.fires]
    bits = draw(done_bits)
    done = frozenset(pair for i, pair in enumerate(pairs) if bits >> i & 1)
    queued = dict(enumerate(draw(counts), 1))
    running = dict(enumerate(draw(counts), 1))
    return tick, done, queued, running


def plan_tick(tasks, *, now, grace, code, done=(), queued=None, running=None) -> TickPlan:
    """Both planning steps at once, as the tick chains them between its reads."""
    drafted = draft(tasks, now=now, grace=grace, code=code)
    return plan(drafted, done=done, queued=queued or {}, running=running or {})


def planned(tick: Tick, done=frozenset(), queued=None, running=None) -> TickPlan:
    return plan_tick(
        tick.tasks,
        now=tick.now,
        grace=tick.grace,
        code=tick.code,
        done=done,
        queued=queued or {},
        running=running or {},
    )


def runs_of(result: TickPlan, task: DueTask) -> list[dt.datetime]:
    return [run.scheduled_for for run in result.runs if run.task_id == task.pk]


def advance_of(result: TickPlan, task: DueTask):
    (advance,) = [a for a in result.advances if a.task_id == task.pk]
    return advance


def is_fire(cron: str, instant: dt.datetime, zone: str) -> bool:
    return next_fire(cron, instant - MICRO, zone) == instant


def due_fires(task: DueTask, now: dt.datetime) -> list[dt.datetime]:
    """Every fire in [next_run_at, now], one next_fire at a time (the brute force)."""
    fires, more = fires_between(task.cron, task.next_run_at, now, task.zone, 10**6)
    assert not more
    return fires


def latest_fire(task: DueTask, now: dt.datetime) -> dt.datetime:
    """The latest fire at or before ``now``, walking forward from ``next_run_at``."""
    return due_fires(task, now)[-1]


# ----------------------------------------------------------------------------- every plan


@settings(max_examples=600, deadline=None)
@given(case=ticks_with_runs())
def test_every_planned_run_is_a_due_fire_of_its_cron_and_not_already_run(case):
    tick, done, queued, running = case
    result = planned(tick, done, queued, running)
    seen = set()
    tasks = {task.pk: task for task in tick.tasks}
    for run in result.runs:
        task = tasks[run.task_id]
        assert not task.blocked
        assert task.next_run_at <= run.scheduled_for <= tick.now
        assert is_fire(task.cron, run.scheduled_for, task.zone)
        assert (run.task_id, run.scheduled_for) not in done
        assert (run.task_id, run.scheduled_for) not in seen
        seen.add((run.task_id, run.scheduled_for))
        assert run == RunToDefer.of(task, tick.code[task.pk].procrastinate_task, run.scheduled_for)
        assert run.scheduled_for <= advance_of(result, task).last_run_at


@settings(max_examples=600, deadline=None)
@given(case=ticks_with_runs())
def test_missed_run_skipped_and_already_run_fires_add_up_to_the_due_fires(case):
    tick, done, queued, running = case
    result = planned(tick, done, queued, running)
    for task in tick.tasks:
        advance = advance_of(result, task)
        if task.blocked:
            assert (advance.missed, advance.skipped, runs_of(result, task)) == (0, 0, [])
            continue
        due = due_fires(task, tick.now)
        already = sum(1 for when in due if (task.pk, when) in done)
        ran = len(runs_of(result, task))
        assert advance.missed + ran + advance.skipped + already == len(due), task
    assert result.missed == sum(a.missed for a in result.advances)
    assert result.skipped == sum(a.skipped for a in result.advances)


@settings(max_examples=400, deadline=None)
@given(case=ticks_with_runs())
def test_every_due_task_moves_on_past_now_once(case):
    tick, done, queued, running = case
    result = planned(tick, done, queued, running)
    assert [a.task_id for a in result.advances] == [task.pk for task in tick.tasks]
    assert result.due == len(tick.tasks)
    assert result.blocked == sum(task.blocked for task in tick.tasks)
    assert result.failures == {}
    for task in tick.tasks:
        advance = advance_of(result, task)
        assert advance.error == ""
        assert advance.next_run_at > tick.now
        assert next_fire(task.cron, tick.now, task.zone) == advance.next_run_at
        runs = runs_of(result, task)
        assert advance.last_run_at == (runs[-1] if runs else None)
        assert runs == sorted(runs)


@settings(max_examples=300, deadline=None)
@given(case=ticks_with_runs())
def test_planning_leaves_its_inputs_unchanged(case):
    tick, done, queued, running = case
    before = copy.deepcopy((tick.tasks, done, queued, running))
    code = dict(tick.code)
    drafted = draft(tick.tasks, now=tick.now, grace=tick.grace, code=tick.code)
    drafted_before = copy.deepcopy((drafted.tasks, drafted.candidates, dict(drafted.moved_on)))
    first = plan(drafted, done=done, queued=queued, running=running)
    assert (tick.tasks, done, queued, running) == before
    assert tick.code == code
    assert (drafted.tasks, drafted.candidates, dict(drafted.moved_on)) == drafted_before
    assert plan(drafted, done=done, queued=queued, running=running) == first


# ----------------------------------------------------------------------------- catch-up


@settings(max_examples=800, deadline=None)
@given(tick=ticks(blocked=False))
def test_catchup_policies(tick):
    """With nothing queued, running or run yet: catch-up chooses among the due fires, then
    ``skip`` and ``buffer_one`` overlap keep the most recent of the chosen ones."""
    result = planned(tick)
    for task in tick.tasks:
        due = due_fires(task, tick.now)
        latest = due[-1]
        if task.catchup == "latest":
            chosen = [latest]
        elif task.catchup == "skip":
            chosen = [latest] if tick.now - latest < tick.grace else []
        else:
            start = max(task.next_run_at, tick.now - task.catchup_window)
            chosen = [when for when in due if when >= start][-task.catchup_max :]
        runs = chosen if task.overlap == "allow" else chosen[-1:]
        assert runs_of(result, task) == runs
        advance = advance_of(result, task)
        assert advance.missed == len(due) - len(chosen)
        assert advance.skipped == len(chosen) - len(runs)


# ----------------------------------------------------------------------------- overlap


@settings(max_examples=600, deadline=None)
@given(case=ticks_with_runs(blocked=False))
def test_overlap_policies(case):
    tick, done, queued, running = case
    result = planned(tick, done, queued, running)
    alone = planned(tick, done)  # the same tick with nothing queued or running
    for task in tick.tasks:
        runs, free = runs_of(result, task), runs_of(alone, task)
        waiting, busy = queued.get(task.pk, 0), running.get(task.pk, 0)
        skipped = advance_of(result, task).skipped
        if task.overlap == "allow":
            assert (runs, skipped) == (free, 0)
        elif task.overlap == "skip":
            assert runs == ([] if waiting or busy else free[-1:])
        else:  # buffer_one: one may wait behind the running one, never two
            assert runs == ([] if waiting else free[-1:])
        candidates = len(free) + advance_of(alone, task).skipped
        assert skipped == candidates - len(runs)


@given(
    fires=st.lists(st.datetimes(timezones=st.just(UTC)), unique=True, max_size=6).map(sorted),
    policy=st.sampled_from(["skip", "buffer_one", "allow"]),
    queued=st.integers(0, 3),
    running=st.integers(0, 3),
)
@settings(max_examples=500)
def test_plan_overlap_keeps_the_latest_fire_it_may(fires, policy, queued, running):
    chosen, skipped = plan_overlap(list(fires), policy=policy, queued=queued, running=running)
    assert len(chosen) + skipped == len(fires)
    assert chosen == fires[len(fires) - len(chosen) :]  # the latest ones, in order
    may_add = {"allow": True, "skip": not (queued or running), "buffer_one": not queued}
    assert len(chosen) == (
        len(fires) if policy == "allow" else int(may_add[policy] and bool(fires))
    )


# ----------------------------------------------------------------------------- errors


BROKEN = {
    "schedule": [{"cron": "61 * * * *"}, {"zone": "Mars/Olympus_Mons"}],
    "code": [TaskCode(step="code", error=ValidationError("Unknown task 'github.gone'."))],
    "kwargs": [TaskCode(step="kwargs", error=ValidationError("Unexpected argument 'x'."))],
    "policies": [{"catchup": "sometimes"}, {"catchup": None}],
}


@settings(max_examples=400, deadline=None)
@given(
    tick=ticks(),
    broken=st.data(),
)
def test_a_task_that_cannot_be_planned_keeps_its_time_and_the_others_plan_as_alone(tick, broken):
    victim = broken.draw(st.sampled_from(tick.tasks))
    step = broken.draw(st.sampled_from(sorted(BROKEN)))
    if victim.blocked and step != "schedule":
        step = "schedule"  # a blocked Task's code and policies are not looked at
    fault = broken.draw(st.sampled_from(BROKEN[step]))
    tasks, code = list(tick.tasks), dict(tick.code)
    if isinstance(fault, TaskCode):
        code[victim.pk] = fault
    else:
        tasks[tasks.index(victim)] = replace(victim, **fault)
    result = planned(Tick(tick.now, tick.grace, tuple(tasks), code))

    failure = result.failures[victim.pk]
    what, fix = STEPS[step]
    assert failure.step == step
    assert failure.message.startswith(f"{what} failed: ")
    assert failure.message.endswith(f"{fix} Retried at every tick.")
    advance = advance_of(result, victim)
    assert (advance.next_run_at, advance.error) == (victim.next_run_at, failure.message)
    assert (advance.last_run_at, advance.missed, advance.skipped) == (None, 0, 0)
    assert runs_of(result, victim) == []
    assert result.errors == {victim.pk: failure.message}
    others = [task for task in tick.tasks if task.pk != victim.pk]
    without = planned(Tick(tick.now, tick.grace, tuple(others), tick.code))
    assert [r for r in result.runs if r.task_id != victim.pk] == list(without.runs)
    assert [a for a in result.advances if a.task_id != victim.pk] == list(without.advances)
    assert result.due == len(tick.tasks)


def test_an_overlong_error_is_cut_and_a_bug_names_its_exception():
    task = DueTask(
        pk=1, integration_id=1, tenant_id=1, name="get_users", cron="* * * * *", zone="UTC",
        kwargs={}, next_run_at=dt.datetime(2026, 6, 1, 12, tzinfo=UTC), catchup="latest",
        catchup_window=DAY, catchup_max=10, overlap="skip", max_attempts=1,
        retry_backoff=MINUTE, paused=False, owner_blocked=False, integration_type="github",
        plan_error="",
    )  # fmt: skip
    long = TaskCode(step="kwargs", error=ValidationError("x" * 5000))
    bug = TaskCode(step="code", error=KeyError("github"))
    now = task.next_run_at
    cut = plan_tick([task], now=now, grace=MINUTE, code={1: long}).failures[1].message
    assert len(cut) == 2000 and cut.endswith("…")
    named = plan_tick([task], now=now, grace=MINUTE, code={1: bug}).failures[1].message
    assert named == (
        "Finding the task's code failed: KeyError: 'github' Deploy the integration's code "
        "again, or disable or delete the task. Retried at every tick."
    )


@pytest.mark.parametrize("blocked", ["paused", "owner_blocked"])
def test_a_blocked_task_moves_on_without_runs_misses_or_code(blocked):
    now = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
    task = DueTask(
        pk=7, integration_id=1, tenant_id=1, name="gone", cron="* * * * *", zone="UTC",
        kwargs={}, next_run_at=now - 3 * HOUR, catchup="all", catchup_window=DAY,
        catchup_max=500, overlap="allow", max_attempts=1, retry_backoff=MINUTE,
        paused=blocked == "paused", owner_blocked=blocked == "owner_blocked",
        integration_type="github", plan_error="",
    )  # fmt: skip
    result = plan_tick([task], now=now, grace=MINUTE, code={})  # its code is not needed
    assert result.runs == ()
    assert result.failures == {}
    assert (result.blocked, result.missed, result.skipped) == (1, 0, 0)
    assert result.advances[0].next_run_at == now + MINUTE
