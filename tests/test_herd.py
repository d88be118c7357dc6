"""The midnight herd: thousands of Tasks due at one instant, taken in chunks.

Each chunk of a tick commits its runs, their jobs and its Tasks' ``next_run_at`` together, so
a scheduler killed in the middle of a herd loses nothing and doubles nothing once another
tick runs; chunks hold every tenant's first Task before anyone's second; two scheduler
workers split a herd between them; and a Task that cannot be planned is taken once per tick.

The herds here are seeded by one ``INSERT … SELECT`` (saving 20,000 Tasks one by one would
take minutes) and run by real scheduler workers, started as ``manage.py procrastinate
worker`` subprocesses on the test database. Those do not load the tests' probe integration,
so their Tasks are the github type's ``get_users`` (their jobs are only deferred, never run).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from integrations.models import Integration
from scheduler import jobs, tick_store
from scheduler import tick as tick_module
from scheduler.models import SchedulerTick, Task, TaskRun
from scheduler.queues import SCHEDULER_QUEUE
from scheduler.tick import run_tick
from tenants.models import Tenant

ROOT = Path(__file__).resolve().parent.parent

#: The herd's instant: every seeded Task fires then, and (daily) not again for a day. Far
#: from the real clock, so that the workers' own periodic ticks never find these Tasks due.
MIDNIGHT = dt.datetime(2030, 1, 8, 0, 0, tzinfo=dt.UTC)


# --- seeding ------------------------------------------------------------------------------


def daily_schedules(at: dt.datetime, count: int) -> list[tuple[str, str]]:
    """``count`` distinct (cron, zone) pairs that fire once a day, at ``at``: the zone's local
    hour at that instant, in zones whose offset then is a whole number of hours. Identical
    Tasks are refused, so the Tasks of one integration differ by their zone."""
    pairs = []
    for name in sorted(available_timezones()):
        local = at.astimezone(ZoneInfo(name))
        offset = local.utcoffset()
        if "/" in name and offset is not None and offset.total_seconds() % 3600 == 0:
            pairs.append((f"0 {local.hour} * * *", name))
    if len(pairs) < count:
        raise ValueError(f"only {len(pairs)} whole-hour zones; {count} Tasks per tenant asked")
    return pairs[:count]


_INSERT_TASKS = """
    INSERT INTO scheduler_task (
        pause_note, name, cron, timezone, kwargs, enabled, catchup, catchup_window,
        catchup_max, overlap, max_attempts, retry_backoff, next_run_at, missed_count,
        skipped_count, created_at, updated_at, integration_id, tenant_id, tenant_rank)
    SELECT '', 'get_users', (%(crons)s::text[])[1 + k], (%(zones)s::text[])[1 + k],
           '{}'::jsonb, true, 'latest', interval '1 hour', 100, 'skip', 1,
           interval '60 seconds', %(at)s, 0, 0, now(), now(),
           (%(integrations)s::bigint[])[1 + s], (%(tenants)s::bigint[])[1 + s],
           %(first_rank)s + k
      FROM (SELECT g %% %(nt)s AS s, g / %(nt)s AS k
              FROM generate_series(0, %(count)s - 1) AS g) AS v
"""


def seed_herd(
    owner, prefix: str, tenants: int, per_tenant: int, *, first_rank: int = 1
) -> list[int]:
    """``tenants`` tenants with a github integration and ``per_tenant`` Tasks each, all due
    at MIDNIGHT (catch-up ``latest`` within an hour), ranked from ``first_rank``; the
    tenants' ids, in creation order."""
    created = Tenant.objects.bulk_create(
        Tenant(name=f"{prefix}-{i}", email=f"ops{i}@{prefix}.example", owner=owner)
        for i in range(tenants)
    )
    integrations = Integration.objects.bulk_create(
        Integration(tenant=t, name="github", config={"org": "herd"}) for t in created
    )
    schedules = daily_schedules(MIDNIGHT, per_tenant)
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_TASKS,
            {
                "crons": [cron for cron, _ in schedules],
                "zones": [zone for _, zone in schedules],
                "at": MIDNIGHT,
                "integrations": [i.pk for i in integrations],
                "tenants": [t.pk for t in created],
                "first_rank": first_rank,
                "nt": tenants,
                "count": tenants * per_tenant,
            },
        )
    return [t.pk for t in created]


# --- real scheduler workers ---------------------------------------------------------------


@dataclass
class SchedulerWorker:
    """``manage.py procrastinate worker --queues=scheduler`` in a subprocess; its database
    sessions carry ``name`` as their application name (``PGAPPNAME``)."""

    name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def scheduler_workers(test_database_url, tmp_path) -> Iterator[Callable[..., SchedulerWorker]]:
    """Start scheduler workers on the test database: ``start(name, chunk_size, threads)``;
    every one still running is stopped at the end."""
    started: list[SchedulerWorker] = []

    def start(name: str, chunk_size: int, threads: int = 2) -> SchedulerWorker:
        log = tmp_path / f"{name}.log"
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url,
            "SCHEDULER_CHUNK_SIZE": str(chunk_size),
            "SCHEDULER_TICK_THREADS": str(threads),
            "LOG_LEVEL": "WARNING",
            "PGAPPNAME": name,
        }
        command = [sys.executable, "manage.py", "procrastinate", "worker"]
        command += [f"--queues={SCHEDULER_QUEUE}", f"--name={name}"]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        worker = SchedulerWorker(name, process, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    workers: Sequence[SchedulerWorker] = (),
    timeout: float = 120,
    every: float = 0.05,
) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` (with the workers' output)
    when it times out or a worker exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [w for w in workers if w.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name} ({w.process.poll()}):\n{w.output()}" for w in workers)
            raise AssertionError(f"{'a worker exited' if dead else 'timed out'}: {what}\n{logs}")
        time.sleep(every)


def live_schedulers() -> int:
    since = timezone.now() - dt.timedelta(seconds=20)
    return jobs.live_scheduler_workers(since)


def sessions_of(name: str) -> int:
    """Database sessions still open for a worker (its application name)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
        return cursor.fetchone()[0]


def defer_tick(at: dt.datetime) -> None:
    """Defer the ``scheduler`` job for the tick of ``at`` (committed: autocommit)."""
    timestamp = int(at.timestamp())
    assert jobs.defer_scheduler_job("scheduler", {"timestamp": timestamp}, f"herd-{timestamp}")


def database_sessions() -> int:
    """Client sessions open on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND backend_type = 'client backend'"
        )
        return cursor.fetchone()[0]


def tenant_jobs() -> dict[int, dict]:
    """Every job on a tenant queue: id -> args."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, args FROM procrastinate_jobs WHERE queue_name <> %s", ["scheduler"]
        )
        return {job_id: json.loads(args) for job_id, args in cursor.fetchall()}


def assert_exactly_one_run_each(task_ids: set[int], at: dt.datetime) -> None:
    """One run per Task for ``at``, each with its own job naming that Task and instant, no
    job without its run, and every Task moved past ``at``."""
    runs = list(TaskRun.objects.values_list("task_id", "scheduled_for", "job_id"))
    assert len(runs) == len(task_ids)
    assert {(task, when) for task, when, _ in runs} == {(task, at) for task in task_ids}
    deferred = tenant_jobs()
    assert set(deferred) == {job_id for _, _, job_id in runs}  # no job without its run
    for task, when, job_id in runs:
        args = deferred[job_id]
        assert (args["task_id"], dt.datetime.fromisoformat(args["scheduled_for"])) == (task, when)
    assert not Task.objects.filter(next_run_at__lte=at).exists()
    assert set(Task.objects.values_list("last_run_at", flat=True)) == {at}


# --- the tests ----------------------------------------------------------------------------

KILL_HERD_TENANTS = 200
KILL_HERD_PER_TENANT = 100  # 20,000 Tasks
KILL_CHUNK = 500


def test_scheduler_killed_mid_herd_loses_and_doubles_nothing_after_restart(
    clean_jobs, user, scheduler_workers
):
    seed_herd(user, "herd", KILL_HERD_TENANTS, KILL_HERD_PER_TENANT)
    task_ids = set(Task.objects.values_list("id", flat=True))
    assert len(task_ids) == KILL_HERD_TENANTS * KILL_HERD_PER_TENANT

    defer_tick(MIDNIGHT)
    victim = scheduler_workers("herd-victim", KILL_CHUNK)
    wait_for(lambda: TaskRun.objects.exists(), "the first chunk's commit", [victim], every=0.01)
    assert sessions_of(victim.name) > 0
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    # Its sessions end (their open transaction rolls back) before anything is counted.
    wait_for(lambda: sessions_of(victim.name) == 0, "the killed worker's sessions to end", [])

    committed = TaskRun.objects.count()
    assert 0 < committed < len(task_ids), "the kill must land in the middle of the herd"
    assert committed % KILL_CHUNK == 0  # whole chunks only
    assert len(tenant_jobs()) == committed
    assert Task.objects.filter(next_run_at__gt=MIDNIGHT).count() == committed

    # The next tick, a minute late: the rest of the herd is caught up (its latest missed
    # fire is MIDNIGHT, within the window); what was committed is not deferred again.
    restarted = scheduler_workers("herd-restarted", KILL_CHUNK)
    next_tick = MIDNIGHT + dt.timedelta(minutes=1)
    defer_tick(next_tick)
    wait_for(
        lambda: SchedulerTick.objects.filter(tick_time=next_tick).exists(),
        "the next tick",
        [restarted],
    )
    restarted.stop()
    assert restarted.process.returncode == 0, restarted.output()

    assert_exactly_one_run_each(task_ids, MIDNIGHT)
    caught_up = SchedulerTick.objects.filter(tick_time=next_tick).values_list("deferred", flat=True)
    assert sum(caught_up) == len(task_ids) - committed


def test_two_schedulers_split_a_herd_exactly(
    clean_jobs, user, scheduler_workers, test_database_url
):
    """Whichever scheduler takes the herd's second chunk is held (the test locks the pass row
    of that chunk's first tenant, which deferring its job must update) until the other has
    finished the rest of the herd: both take part, whatever the timing."""
    chunk, tenants, ranks = 20, 20, 5
    # Created first (lowest id) with one Task ranked 2nd: the head of the second chunk.
    (held,) = seed_herd(user, "held", 1, 1, first_rank=2)
    seed_herd(user, "herd", tenants, ranks)
    task_ids = set(Task.objects.values_list("id", flat=True))
    assert len(task_ids) > 2 * chunk

    # One thread each: the held chunk must be another process's, not a thread's.
    workers = [scheduler_workers(f"herd-split-{i}", chunk, threads=1) for i in range(2)]
    wait_for(lambda: live_schedulers() == 2, "both schedulers to be live", workers)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO scheduler_tenantpass (tenant_id, pass, seq) VALUES (%s, 0, 0) "
            "ON CONFLICT (tenant_id) DO NOTHING",
            [held],
        )
    holder = psycopg.connect(test_database_url, autocommit=False)
    try:
        holder.execute("SELECT 1 FROM scheduler_tenantpass WHERE tenant_id = %s FOR UPDATE", [held])
        defer_tick(MIDNIGHT)
        ticks = SchedulerTick.objects.filter(tick_time=MIDNIGHT)
        wait_for(lambda: ticks.exists(), "the scheduler not held to finish", workers)
        assert ticks.count() == 1  # the other one is still held in its chunk
    finally:
        holder.rollback()
        holder.close()
    wait_for(lambda: ticks.count() == 2, "the held scheduler to finish", workers)

    deferred = sorted(ticks.values_list("deferred", flat=True))
    assert deferred[0] > 0 and sum(deferred) == len(task_ids), deferred
    assert_exactly_one_run_each(task_ids, MIDNIGHT)


def test_first_chunk_of_a_herd_holds_every_tenants_first_task(db, user, probe_task):
    tenant_count, per_tenant = 6, 4
    tenants = [
        Tenant.create(user, f"fair-{i}", f"ops@fair-{i}.example") for i in range(tenant_count)
    ]
    for t in tenants:  # tenant by tenant: in id order, the first tenant's whole list comes first
        for i in range(per_tenant):
            probe_task(tenant_=t, kwargs={"fail_first": i}, now=MIDNIGHT - dt.timedelta(minutes=1))
    assert Task.objects.filter(next_run_at=MIDNIGHT).count() == tenant_count * per_tenant

    first_chunk: list[tuple[int, int]] = []

    def after_first_chunk() -> None:
        first_chunk.extend(TaskRun.objects.values_list("tenant_id", "task__tenant_rank"))

    result = run_tick(MIDNIGHT, chunk_size=tenant_count, on_full_chunk=after_first_chunk)

    assert sorted(tenant for tenant, _ in first_chunk) == sorted(t.pk for t in tenants)
    assert {rank for _, rank in first_chunk} == {1}
    assert len(result.deferred) == tenant_count * per_tenant
    assert result.chunks == per_tenant


def test_a_task_that_cannot_be_planned_is_taken_once_per_tick(db, tenant, probe_task, monkeypatch):
    earlier = MIDNIGHT - dt.timedelta(minutes=1)
    broken, *good = [probe_task(kwargs={"fail_first": i}, now=earlier) for i in range(3)]
    # Its kwargs no longer fit the task's function (edited behind validation's back).
    Task.objects.filter(pk=broken.pk).update(kwargs={"no_such_argument": 1})

    taken: list[list[int]] = []
    lock_due_tasks = tick_store.lock_due_tasks

    def counted(*args, **kwargs):
        if len(taken) >= 10:
            raise AssertionError(f"the tick keeps taking the same Tasks: {taken}")
        due = lock_due_tasks(*args, **kwargs)
        taken.append([task.pk for task in due.tasks])
        return due

    monkeypatch.setattr(tick_store, "lock_due_tasks", counted)
    result = run_tick(MIDNIGHT, chunk_size=1)

    assert sorted(pk for chunk in taken for pk in chunk) == sorted(
        [broken.pk, *(t.pk for t in good)]
    )
    assert set(result.errors) == {broken.pk}
    assert set(TaskRun.objects.values_list("task_id", flat=True)) == {t.pk for t in good}
    broken.refresh_from_db()
    assert broken.plan_error and broken.next_run_at == MIDNIGHT  # still due, for the next tick


def test_threads_of_one_tick_split_a_herd_exactly(clean_jobs, user, monkeypatch):
    """Past a full first chunk, the tick's threads (each on its own connection) take the
    other chunks; together they defer every Task once, and the tick counts them all."""
    seed_herd(user, "threads", tenants=30, per_tenant=10)
    task_ids = set(Task.objects.values_list("pk", flat=True))
    workers: set[str] = set()
    run_chunk = tick_module.run_chunk
    main_calls: list[int] = []
    helper_took = threading.Event()

    def recorded(*args, **kwargs):
        main = threading.current_thread() is threading.main_thread()
        if main:
            main_calls.append(1)
            if len(main_calls) > 2:  # the threads are started: let one of them take a chunk
                helper_took.wait(timeout=30)
        taken = run_chunk(*args, **kwargs)
        if taken:
            workers.add(threading.current_thread().name)
            if not main:
                helper_took.set()
        return taken

    monkeypatch.setattr(tick_module, "run_chunk", recorded)
    sessions_before = database_sessions()
    result = run_tick(MIDNIGHT, chunk_size=10, threads=3)

    assert len(workers) > 1  # more than the calling thread took chunks
    assert database_sessions() == sessions_before  # each thread closed its own connection
    assert len(result.deferred) == len(set(result.deferred)) == len(task_ids)
    assert result.due == len(task_ids) and result.chunks >= len(task_ids) // 10
    assert_exactly_one_run_each(task_ids, MIDNIGHT)
    (tick,) = SchedulerTick.objects.filter(tick_time=MIDNIGHT)
    assert tick.deferred == len(task_ids)


def test_an_error_in_a_tick_thread_fails_the_tick_and_keeps_its_chunk_due(
    clean_jobs, user, monkeypatch
):
    seed_herd(user, "thread-error", tenants=10, per_tenant=10)
    advance = tick_store.advance_tasks
    failing = threading.Event()

    def advance_or_fail(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread() and not failing.is_set():
            failing.set()
            raise RuntimeError("database went away")
        return advance(*args, **kwargs)

    monkeypatch.setattr(tick_store, "advance_tasks", advance_or_fail)
    with pytest.raises(RuntimeError, match="went away"):
        run_tick(MIDNIGHT, chunk_size=10, threads=2)

    assert failing.is_set()
    # The failed chunk rolled back: each Task has its one run, or none and is still due (the
    # calling thread may have taken the failed chunk's Tasks after it was released).
    runs = list(TaskRun.objects.values_list("task_id", flat=True))
    assert len(runs) == len(set(runs))
    still_due = set(Task.objects.filter(next_run_at__lte=MIDNIGHT).values_list("pk", flat=True))
    assert still_due.isdisjoint(runs)
    assert still_due | set(runs) == set(Task.objects.values_list("pk", flat=True))
