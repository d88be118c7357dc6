"""Fair sharing of workers between tenants (scheduler/fairness.py), with real workers.

Jobs record the order they ran in themselves; a worker of concurrency 1 makes that order
the fetch order, so nothing here depends on timing except where concurrency is the point.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from integrations.base.registry import IntegrationType, register
from integrations.base.tasks import RunContext, integration_task
from integrations.models import Integration
from scheduler import fairness, jobs, run_records
from scheduler.models import Task
from scheduler.planner import RunToDefer
from scheduler.runs import run_now
from tenants.models import Tenant
from tenants.queues import queue_for

T0 = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)

#: (task id, scheduled_for, label, the tenant's jobs doing at that moment), in run order.
RAN: list[tuple[int | None, dt.datetime | None, str, int]] = []
_RAN_LOCK = threading.Lock()


@register
class FairProbe(IntegrationType):
    name = "fairprobe"


@integration_task(FairProbe)
def record(
    run: RunContext, label: str = "", hold: float = 0.0, count_doing: bool = False,
    follow_up: str = "",
) -> None:  # fmt: skip
    """Record that this job ran; optionally count its tenant's running jobs, hold a while,
    and defer a follow-up job labelled ``follow_up``."""
    doing = 0
    try:
        if count_doing:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s "
                    "AND status = 'doing'",
                    [queue_for(run.integration.tenant_id)],
                )
                (doing,) = cursor.fetchone()
        with _RAN_LOCK:
            RAN.append((run.task_id, run.scheduled_for, label, doing))
        time.sleep(hold)
        if follow_up:
            run.defer("record", label=follow_up)
    finally:
        connection.close()  # a worker thread: leave no connection to the test database


@pytest.fixture(autouse=True)
def _empty_log():
    RAN.clear()
    yield
    RAN.clear()


@pytest.fixture
def make_tenant(user):
    def make(name: str, weight: int = 1, max_running: int | None = None) -> Tenant:
        tenant = Tenant.create(user, name, f"ops@{name}.example")
        Tenant.objects.filter(pk=tenant.pk).update(weight=weight, max_running=max_running)
        return tenant

    return make


def make_task(tenant: Tenant, **kwargs) -> Task:
    integration, _ = Integration.objects.get_or_create(name="fairprobe", tenant=tenant)
    task = Task(integration=integration, name="record", cron="0 0 1 1 *", kwargs=kwargs)
    task.full_clean()
    task.save(now=T0)
    return task


def defer(task: Task, count: int, start: int = 0) -> None:
    """Defer ``count`` runs of the task (one batch, like a tick), for ticks start.. on."""
    runs = [
        RunToDefer.of(task, "fairprobe.record", T0 + dt.timedelta(minutes=start + i))
        for i in range(count)
    ]
    with transaction.atomic():
        run_records.defer_runs(runs)


def ran_tasks() -> list[int | None]:
    return [task_id for task_id, *_ in RAN]


def queues(*tenants: Tenant) -> list[str]:
    return [queue_for(tenant) for tenant in tenants]


def test_a_backlog_does_not_delay_another_tenant(run_worker, make_tenant):
    a, b = make_tenant("alpha"), make_tenant("beta")
    task_a, task_b = make_task(a), make_task(b)
    defer(task_a, 50)
    defer(task_b, 1)

    run_worker(queues(a, b), concurrency=1)

    assert len(RAN) == 51
    assert task_b.pk in ran_tasks()[:2]


def test_weights_share_a_saturated_worker(run_worker, make_tenant):
    light, heavy = make_tenant("light", weight=1), make_tenant("heavy", weight=3)
    task_light, task_heavy = make_task(light), make_task(heavy)
    defer(task_light, 40)  # the light tenant's backlog is there first
    defer(task_heavy, 40)

    run_worker(queues(light, heavy), concurrency=1)

    first = Counter(ran_tasks()[:40])
    assert 27 <= first[task_heavy.pk] <= 33, first  # 30 ± 10%
    assert first[task_light.pk] + first[task_heavy.pk] == 40


def test_each_tenant_keeps_its_order_and_a_herd_interleaves(run_worker, make_tenant):
    tenants = [make_tenant(name) for name in ("one", "two", "three")]
    tasks = [make_task(tenant) for tenant in tenants]
    # One batch, as a tick defers it, listed newest tick first.
    runs = [
        RunToDefer.of(task, "fairprobe.record", T0 + dt.timedelta(minutes=i))
        for i in reversed(range(4))
        for task in tasks
    ]
    with transaction.atomic():
        run_records.defer_runs(runs)

    run_worker(queues(*tenants), concurrency=1)

    order = ran_tasks()
    assert sorted(order[:3]) == sorted(task.pk for task in tasks)  # everyone's first first
    for task in tasks:
        ticks = [when for task_id, when, *_ in RAN if task_id == task.pk]
        assert ticks == sorted(ticks) and len(ticks) == 4


def test_an_idle_tenant_gets_neither_a_burst_nor_a_penalty(run_worker, make_tenant):
    busy, fresh = make_tenant("busy"), make_tenant("fresh")
    task_busy, task_fresh = make_task(busy), make_task(fresh)
    defer(task_busy, 20)
    run_worker(queues(busy), concurrency=1)  # busy's pass is far ahead of fresh's
    RAN.clear()

    defer(task_busy, 5, start=20)
    defer(task_fresh, 5)
    run_worker(queues(busy, fresh), concurrency=1)

    order = ran_tasks()
    assert order[:2] == [task_busy.pk, task_fresh.pk]  # no penalty for busy's past work
    assert order.count(task_fresh.pk) == 5
    assert order[:6].count(task_fresh.pk) == 3  # no burst for fresh either: they alternate


def test_max_running_caps_a_tenant_across_worker_slots(run_worker, make_tenant):
    capped, other = make_tenant("capped", max_running=2), make_tenant("other")
    task_capped = make_task(capped, hold=0.15, count_doing=True)
    task_other = make_task(other, hold=0.15, count_doing=True)
    defer(task_capped, 8)
    defer(task_other, 8)

    # A worker with wait=False stops when the next fetch finds nothing, which happens
    # while both of capped's slots are busy: start it again until every job ran.
    for _ in range(20):
        run_worker(queues(capped, other), concurrency=5)
        if len(RAN) == 16:
            break

    capped_doing = [doing for task_id, _, _, doing in RAN if task_id == task_capped.pk]
    other_doing = [doing for task_id, _, _, doing in RAN if task_id == task_other.pk]
    assert len(capped_doing) == 8 and len(other_doing) == 8
    assert max(capped_doing) <= 2
    assert max(other_doing) >= 3  # the free worker slots went to the other tenant
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT lock FROM procrastinate_jobs WHERE queue_name = %s",
            [queue_for(capped)],
        )
        locks = {lock for (lock,) in cursor.fetchall()}
    assert locks == {f"tenant-{capped.pk}-slot-0", f"tenant-{capped.pk}-slot-1"}


def test_run_now_is_not_stuck_behind_a_backlog(run_worker, make_tenant):
    a, b = make_tenant("alpha"), make_tenant("beta")
    task_a, task_b = make_task(a), make_task(b)
    defer(task_a, 30)
    run_now(task_b, now=T0)

    run_worker(queues(a, b), concurrency=1)

    assert task_b.pk in ran_tasks()[:2]


def test_a_follow_up_job_gets_its_tenants_fair_share(run_worker, make_tenant):
    a, b = make_tenant("alpha"), make_tenant("beta", max_running=1)
    task_a, task_b = make_task(a), make_task(b, follow_up="next")
    defer(task_a, 30)
    defer(task_b, 1)

    run_worker(queues(a, b), concurrency=1)

    labels = [label for *_, label, _ in RAN]
    assert labels.count("next") == 1
    assert labels.index("next") <= 3  # not behind alpha's remaining backlog
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lock, priority FROM procrastinate_jobs WHERE queue_name = %s ORDER BY id",
            [queue_for(b)],
        )
        (lock_run, _), (lock_next, priority_next) = cursor.fetchall()
    assert lock_run == lock_next == f"tenant-{b.pk}-slot-0"
    assert priority_next < 0


def test_a_follow_up_is_limited_to_its_integrations_own_tasks(make_tenant, db):
    tenant = make_tenant("alpha")
    integration = Integration.objects.create(name="fairprobe", tenant=tenant)
    run = RunContext(integration_id=integration.pk, task_id=None, scheduled_for=None,
                     job_id=None, attempt=1)  # fmt: skip
    with pytest.raises(ValidationError, match="has no task 'maintenance'"):
        run.defer("maintenance")
    with pytest.raises(ValidationError, match="record"):
        run.defer("record", no_such_argument=1)
    with pytest.raises(ValidationError, match="has no task"):
        run.defer(jobs.defer_for_tenant)  # a callable that is not one of its tasks


def test_a_retry_keeps_its_priority_and_lock(run_worker, make_tenant, probe_task, tenant):
    Tenant.objects.filter(pk=tenant.pk).update(max_running=3)
    make_task(make_tenant("alpha"))  # another tenant's pass moves too
    task = probe_task(kwargs={"fail_first": 1}, max_attempts=2, retry_backoff=dt.timedelta(0))
    with transaction.atomic():
        run_records.defer_runs([RunToDefer.of(task, "probe.flaky", T0)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT priority, lock FROM procrastinate_jobs")
        ((priority, lock),) = cursor.fetchall()
    assert priority < 0 and lock == f"tenant-{tenant.pk}-slot-0"

    run_worker([queue_for(tenant)], concurrency=1)

    with connection.cursor() as cursor:
        cursor.execute("SELECT status, attempts, priority, lock FROM procrastinate_jobs")
        assert cursor.fetchall() == [("succeeded", 2, priority, lock)]


def _fetch_order() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM procrastinate_jobs WHERE status = 'todo' ORDER BY priority DESC, id"
        )
        return [job_id for (job_id,) in cursor.fetchall()]


def test_passes_near_the_int4_limit_are_rebased_keeping_the_order(clean_jobs, make_tenant):
    a, b = make_tenant("alpha"), make_tenant("beta", weight=2)
    task_a, task_b = make_task(a), make_task(b)
    defer(task_a, 5)
    defer(task_b, 5)
    shift = fairness.REBASE_AT
    with connection.cursor() as cursor:  # as after a long life: passes near the limit
        cursor.execute("UPDATE scheduler_tenantpass SET pass = pass + %s", [shift])
        cursor.execute("UPDATE procrastinate_jobs SET priority = priority - %s", [shift])
    before = _fetch_order()

    defer(task_a, 1, start=5)
    defer(task_b, 1, start=5)

    after = _fetch_order()
    assert [job_id for job_id in after if job_id in before] == before  # the same order
    assert len(after) == len(before) + 2
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(priority), max(priority) FROM procrastinate_jobs")
        lowest, highest = cursor.fetchone()
        cursor.execute("SELECT max(pass) FROM scheduler_tenantpass")
        (highest_pass,) = cursor.fetchone()
    assert highest < 0 and lowest > -100 * fairness.STRIDE
    assert highest_pass < fairness.REBASE_AT


def _notifications_after(url: str, action) -> list[dict]:
    """What procrastinate's any-queue channel carried while ``action`` ran (committed)."""
    import json

    import psycopg

    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN procrastinate_any_queue_v1")
        action()
        return [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]


@pytest.mark.django_db(transaction=True)
def test_a_freed_slot_wakes_the_workers_at_once(make_tenant, test_database_url):
    """A worker that found only slot-blocked jobs sleeps until notified: the end of a locked
    job notifies as an insert does, so the next job of the slot starts without polling."""
    capped, free = make_tenant("capped", max_running=1), make_tenant("free")
    defer(make_task(capped), 2)
    defer(make_task(free), 1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT queue_name, min(id) FROM procrastinate_jobs GROUP BY queue_name")
        first = dict(cursor.fetchall())

    def run_and_finish(job_id: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
            cursor.execute(
                "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", [job_id]
            )

    capped_job, free_job = first[queue_for(capped)], first[queue_for(free)]
    woken = _notifications_after(test_database_url, lambda: run_and_finish(capped_job))
    assert {"type": "job_inserted", "job_id": capped_job} in woken
    # a job without a lock frees no slot: its end wakes nobody
    assert _notifications_after(test_database_url, lambda: run_and_finish(free_job)) == []
