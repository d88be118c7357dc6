"""Benchmark 6: fair sharing of one worker pool between tenants, against oldest-first.

Everything runs on one real ``manage.py procrastinate worker`` subprocess serving every
queue (``--concurrency 8``), started as ``python -m bench.fairness _worker ARGS``, which
registers a bench-only sync task (``bench.fair_sleep``: sleeps the given milliseconds) and
then runs the worker command in the same process. Each measurement is made twice, side by
side on the same worker:

- **fair**: jobs deferred the way Metronome defers them (:func:`scheduler.jobs.defer_for_tenant`
  for single jobs; a backlog in one batch through :func:`scheduler.jobs.defer_for_tenants`,
  the statement the tick uses), with their stride priority and per-tenant lock slot;
- **oldest-first**: the same jobs with priority 0 and no lock, as a plain procrastinate
  ``defer`` makes them (the worker then takes them in id order).

1. Noisy neighbour: tenant A has ``--backlog`` queued 50 ms jobs; tenants B-K each defer one
   50 ms job per second for ``--duration`` seconds. Start lateness of B-K's jobs = their
   ``started`` event - their ``deferred`` event (procrastinate's own, database clock).
2. Weights 1:3: two tenants with saturating backlogs; jobs started per tenant over a window.
3. ``max_running = 2`` on a tenant with ``--limited`` queued jobs: jobs running sampled
   every 50 ms from ``procrastinate_jobs``, and the drain rate against two jobs' worth and
   against a worker of ``--concurrency 2`` draining the same jobs with no lock (3b).
4. Cost: no-op jobs deferred one by one (jobs/s, in one transaction), then drained by the
   pool (jobs/s).

    bench/run.sh fairness [--quick] [--backlog 10000] [--duration 30] [--window 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from bench import seed
from bench.common import (
    ROOT,
    Stopwatch,
    execute,
    fetch,
    machine,
    parse_options,
    percentile,
    prepare,
    publish,
    table,
    verdict,
)

TASK = "bench.fair_sleep"
JOB_MS = 50
CONCURRENCY = 8
TARGET_P99 = 1.0
TARGET_RATIO_TOLERANCE = 0.10
LIMIT = 2
TARGET_DRAIN = 0.90
TARGET_COST = 0.90
SIDES = ("fair", "oldest-first")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backlog", type=int, default=None, help="tenant A's jobs (10000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds B-K defer (30)")
    parser.add_argument("--window", type=float, default=None, help="weights window, s (10)")
    parser.add_argument("--limited", type=int, default=None, help="limited tenant's jobs (1000)")
    parser.add_argument("--noop", type=int, default=None, help="no-op jobs for the cost (1000)")


@dataclass(frozen=True)
class Sizes:
    backlog: int
    duration: float
    window: float
    limited: int
    noop: int

    @classmethod
    def of(cls, args: argparse.Namespace, quick: bool) -> Sizes:
        def pick(value: float | None, full: float, small: float) -> float:
            return value if value is not None else (small if quick else full)

        return cls(
            backlog=int(pick(args.backlog, 10_000, 300)),
            duration=pick(args.duration, 30, 3),
            window=pick(args.window, 10, 2),
            limited=int(pick(args.limited, 1_000, 20)),
            noop=int(pick(args.noop, 1_000, 50)),
        )


# --- the worker -----------------------------------------------------------------------


def register_task() -> None:
    """``bench.fair_sleep(ms)``: a sync task that sleeps ``ms`` milliseconds."""
    from procrastinate.contrib.django import app

    @app.task(name=TASK)
    def fair_sleep(ms: int) -> None:
        if ms:
            time.sleep(ms / 1000)


def worker_main(argv: list[str]) -> None:
    """``_worker ARGS``: the bench task, then ``manage.py procrastinate worker ARGS``."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    register_task()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", "procrastinate", "worker", *argv])


@contextlib.contextmanager
def worker(url: str, *options: str) -> Iterator[None]:
    """One worker process serving every queue, until the block ends."""
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "bench.fairness", "_worker", f"--concurrency={CONCURRENCY}"]
    command += options
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not fetch("SELECT 1 FROM procrastinate_workers"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the worker did not start ({proc.poll()}):\n{log.read()}")
                time.sleep(0.2)
            yield
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- deferring ------------------------------------------------------------------------


def defer(tenant_ids: Sequence[int], ms: int, fair: bool) -> None:
    """One job per tenant id (in order), in one transaction: with each job's fair priority
    and lock (as the tick defers), or priority 0 and no lock (plain procrastinate)."""
    from django.db import transaction
    from procrastinate.jobs import Job

    from scheduler.jobs import defer_for_tenants, job_manager
    from tenants.queues import queue_for

    with transaction.atomic():
        if fair:
            defer_for_tenants([(tenant_id, TASK, {"ms": ms}) for tenant_id in tenant_ids])
            return
        batch = [
            Job(
                id=None,
                queue=queue_for(tenant_id),
                lock=None,
                queueing_lock=None,
                priority=0,
                task_name=TASK,
                task_kwargs={"ms": ms},
            )
            for tenant_id in tenant_ids
        ]
        job_manager().batch_defer_jobs(batch)


def defer_one(tenant_id: int, ms: int, fair: bool) -> None:
    """One job, deferred on its own: Metronome's ``defer_for_tenant``, or a plain defer."""
    from scheduler.jobs import defer_for_tenant

    if fair:
        defer_for_tenant(tenant_id, TASK, {"ms": ms})
    else:
        defer([tenant_id], ms, fair=False)


def reset() -> None:
    """Drop every waiting job, wait for the running ones, forget jobs, events and passes."""
    execute("DELETE FROM procrastinate_jobs WHERE status = 'todo'")
    wait_until("SELECT count(*) = 0 FROM procrastinate_jobs WHERE status = 'doing'", 60)
    execute("TRUNCATE procrastinate_jobs, procrastinate_events RESTART IDENTITY CASCADE")
    execute("DELETE FROM scheduler_tenantpass")


def wait_until(sql: str, timeout: float, params: Sequence[object] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not fetch(sql, params)[0][0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"still false after {timeout:.0f} s: {sql}")
        time.sleep(0.05)


def started_count(queue: str) -> int:
    sql = "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status <> 'todo'"
    return fetch(sql, [queue])[0][0]


# --- 1. noisy neighbour ---------------------------------------------------------------


def noisy_neighbour(a: int, others: Sequence[int], sizes: Sizes, fair: bool) -> list[float]:
    """B-K's start lateness (seconds), tenant A's backlog queued first."""
    reset()
    defer([a] * sizes.backlog, JOB_MS, fair)
    wait_until("SELECT count(*) > 0 FROM procrastinate_jobs WHERE status = 'doing'", 30)
    start = time.monotonic()
    for second in range(int(sizes.duration)):
        for tenant_id in others:
            defer_one(tenant_id, JOB_MS, fair)
        time.sleep(max(0.0, start + second + 1 - time.monotonic()))
    queues = [str(t) for t in others]
    # Oldest-first starts them only once A's backlog is gone.
    backlog_s = sizes.backlog * JOB_MS / 1000 / 4
    wait_until(
        "SELECT count(*) = 0 FROM procrastinate_jobs WHERE status = 'todo' "
        "AND queue_name = ANY(%s)",
        120 + backlog_s,
        [queues],
    )
    rows = fetch(
        "SELECT extract(epoch FROM s.at - d.at) FROM procrastinate_jobs j "
        "JOIN procrastinate_events d ON d.job_id = j.id AND d.type = 'deferred' "
        "JOIN procrastinate_events s ON s.job_id = j.id AND s.type = 'started' "
        "WHERE j.queue_name = ANY(%s)",
        [queues],
    )
    expected = int(sizes.duration) * len(others)
    if len(rows) != expected:
        raise RuntimeError(f"{len(rows)} B-K jobs started, expected {expected}")
    return [float(r[0]) for r in rows]


# --- 2. weights -----------------------------------------------------------------------


def weights(light: int, heavy: int, sizes: Sizes, fair: bool) -> tuple[int, int]:
    """Jobs of the weight-1 and weight-3 tenants started over the window, both saturated."""
    reset()
    # Enough for both never to drain within the window at 8 jobs per 50 ms.
    per_tenant = int((sizes.window + 2) * CONCURRENCY * 1000 / JOB_MS) + 50
    defer([light] * per_tenant, JOB_MS, fair)
    defer([heavy] * per_tenant, JOB_MS, fair)
    wait_until("SELECT count(*) > 0 FROM procrastinate_jobs WHERE status = 'doing'", 30)
    time.sleep(1.0)  # past the start
    before = started_count(str(light)), started_count(str(heavy))
    time.sleep(sizes.window)
    after = started_count(str(light)), started_count(str(heavy))
    return after[0] - before[0], after[1] - before[1]


# --- 3. concurrency limit -------------------------------------------------------------


def limited(tenant: int, sizes: Sizes, fair: bool) -> tuple[int, float]:
    """(most jobs seen running at once, jobs/s drained) of a max_running=2 tenant."""
    reset()
    queue = str(tenant)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        import psycopg
        from django.db import connection

        params = connection.get_connection_params()
        with psycopg.connect(**params, autocommit=True) as conn:
            while not stop.is_set():
                (running,) = conn.execute(
                    "SELECT count(*) FROM procrastinate_jobs "
                    "WHERE queue_name = %s AND status = 'doing'",
                    [queue],
                ).fetchone()
                peak = max(peak, running)
                time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        defer([tenant] * sizes.limited, JOB_MS, fair)
        # At most 1.5 times the ideal drain time (plus 5 s): a slower drain is measured over
        # what it finished by then.
        deadline = time.monotonic() + 1.5 * sizes.limited * JOB_MS / 1000 / LIMIT + 5
        while (
            time.monotonic() < deadline
            and fetch("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")[
                0
            ][0]
        ):
            time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()
    return peak, throughput(None)


def throughput(expected: int | None) -> float:
    """Jobs per second from the first job's start to the last one's end (events); all
    ``expected`` jobs must have succeeded (None: those that did)."""
    ((done, first, last),) = fetch(
        "SELECT count(*) FILTER (WHERE e.type = 'succeeded'), "
        "  min(e.at) FILTER (WHERE e.type = 'started'), "
        "  max(e.at) FILTER (WHERE e.type = 'succeeded') "
        "FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id "
        "WHERE j.task_name = %s",
        [TASK],
    )
    if expected is not None and done != expected:
        raise RuntimeError(f"{done} jobs succeeded, expected {expected}")
    if not done:
        return 0.0
    return done / (last - first).total_seconds()


# --- 4. cost --------------------------------------------------------------------------


def cost(tenants: Sequence[int], sizes: Sizes, fair: bool) -> tuple[float, float]:
    """(jobs/s deferred one at a time, jobs/s drained) of no-op jobs spread over tenants."""
    from django.db import transaction

    reset()
    # One transaction, so that the pool drains a full queue (not the jobs as they come).
    with Stopwatch() as sw, transaction.atomic():
        for i in range(sizes.noop):
            defer_one(tenants[i % len(tenants)], 0, fair)
    deferred = sizes.noop / sw.seconds
    wait_until(
        "SELECT count(*) = 0 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
        60 + sizes.noop / 20,
    )
    return deferred, throughput(sizes.noop)


# --- the report -----------------------------------------------------------------------


def seed_tenants() -> dict[str, int]:
    """Tenants A-K (weight 1, no limit), W1 and W3 (weights 1 and 3), L (max_running 2)."""
    from tenants.models import Tenant

    seed.wipe()
    names = [chr(ord("A") + i) for i in range(11)] + ["W1", "W3", "L"]
    fleet = seed.make_fleet(len(names), prefix="fair")
    ids = dict(zip(names, fleet.tenant_ids, strict=True))
    Tenant.objects.filter(pk=ids["W3"]).update(weight=3)
    Tenant.objects.filter(pk=ids["L"]).update(max_running=LIMIT)
    return ids


def main(argv: Sequence[str] | None = None) -> None:
    if argv is None and sys.argv[1:2] == ["_worker"]:
        worker_main(sys.argv[2:])
        return
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    url = prepare(options)
    info = machine()
    sizes = Sizes.of(options.extra, options.quick)
    ids = seed_tenants()
    others = [ids[chr(ord("A") + i)] for i in range(1, 11)]
    late: dict[str, list[float]] = {}
    shares: dict[str, tuple[int, int]] = {}
    limits: dict[str, tuple[int, float]] = {}
    costs: dict[str, tuple[float, float]] = {}
    with worker(url):
        for side in SIDES:
            fair = side == "fair"
            late[side] = noisy_neighbour(ids["A"], others, sizes, fair)
            shares[side] = weights(ids["W1"], ids["W3"], sizes, fair)
            limits[side] = limited(ids["L"], sizes, fair)
            costs[side] = cost(others, sizes, fair)
            print(side, shares[side], limits[side], costs[side], file=sys.stderr)
        reset()
    # The most a worker drains running the same jobs two at a time with no lock at all:
    # procrastinate's own per-job cost, the ceiling of any limit of 2.
    with worker(url, f"--concurrency={LIMIT}"):
        limits["plain, 2 at a time"] = limited(ids["L"], sizes, False)
        reset()
    body = report(options, info, sizes, late, shares, limits, costs)
    publish(options, "fairness", body)


def report(
    options: object,
    info: str,
    sizes: Sizes,
    late: dict[str, list[float]],
    shares: dict[str, tuple[int, int]],
    limits: dict[str, tuple[int, float]],
    costs: dict[str, tuple[float, float]],
) -> str:
    rows = []
    p99 = {side: percentile(late[side], 99) for side in SIDES}
    rows.append(
        (
            f"1. noisy neighbour: B-K start lateness p50 / p99 ({len(late['fair'])} jobs; "
            f"A has {sizes.backlog:,} queued)",
            *(f"{percentile(late[s], 50):.3f} / {p99[s]:.3f} s" for s in SIDES),
            f"fair p99 ≤ {TARGET_P99:.0f} s",
            verdict(p99["fair"] <= TARGET_P99),
        )
    )

    def ratio(pair: tuple[int, int]) -> float:
        return pair[1] / pair[0] if pair[0] else float("inf")

    low, high = 3 * (1 - TARGET_RATIO_TOLERANCE), 3 * (1 + TARGET_RATIO_TOLERANCE)
    rows.append(
        (
            f"2. weights 1:3, jobs started in {sizes.window:g} s (weight 1 : weight 3)",
            *(f"{shares[s][0]} : {shares[s][1]} = 1:{ratio(shares[s]):.2f}" for s in SIDES),
            f"1:3 ± 10 % ({low:.1f}-{high:.1f})",
            verdict(low <= ratio(shares["fair"]) <= high),
        )
    )
    ideal = LIMIT * 1000 / JOB_MS
    rows.append(
        (
            f"3. max_running {LIMIT}, {sizes.limited:,} jobs: most running at once / drain rate",
            *(f"{limits[s][0]} / {limits[s][1]:.1f} jobs/s" for s in SIDES),
            f"≤ {LIMIT} / ≥ {TARGET_DRAIN * ideal:.0f} jobs/s ({TARGET_DRAIN:.0%} of {ideal:.0f})",
            verdict(limits["fair"][0] <= LIMIT and limits["fair"][1] >= TARGET_DRAIN * ideal),
        )
    )
    plain = limits["plain, 2 at a time"]
    share = limits["fair"][1] / plain[1] if plain[1] else 0.0
    rows.append(
        (
            f"3b. the same jobs, no limit, on a worker with `--concurrency {LIMIT}` (plain "
            f"procrastinate running {LIMIT} at a time: the ceiling of any limit of {LIMIT})",
            "",
            f"{plain[0]} / {plain[1]:.1f} jobs/s",
            f"fair 3 ≥ {TARGET_DRAIN:.0%} of 3b (fair = {share:.0%})",
            verdict(limits["fair"][0] <= LIMIT and share >= TARGET_DRAIN),
        )
    )
    defer_share = costs["fair"][0] / costs["oldest-first"][0]
    drain_share = costs["fair"][1] / costs["oldest-first"][1]
    rows.append(
        (
            f"4a. cost: {sizes.noop:,} no-op jobs deferred one at a time (one transaction)",
            *(f"{costs[s][0]:.0f} jobs/s" for s in SIDES),
            f"≥ {TARGET_COST:.0%} (fair = {defer_share:.0%})",
            verdict(defer_share >= TARGET_COST),
        )
    )
    rows.append(
        (
            "4b. cost: the same jobs drained by the pool",
            *(f"{costs[s][1]:.0f} jobs/s" for s in SIDES),
            f"≥ {TARGET_COST:.0%} (fair = {drain_share:.0%})",
            verdict(drain_share >= TARGET_COST),
        )
    )
    size = "quick (smoke) sizes" if getattr(options, "quick", False) else "full sizes"
    return "\n\n".join(
        [
            "## 6. Fairness",
            f"Machine: {info}.",
            f"`bench/run.sh fairness` - {size}, one run. One `manage.py procrastinate worker` "
            f"(all queues, `--concurrency {CONCURRENCY}`) runs a sync task sleeping {JOB_MS} ms "
            "(0 ms for the cost). *fair*: jobs deferred through Metronome's fair path "
            "(`defer_for_tenant`, or `defer_for_tenants` for a backlog batch: stride priority and "
            "lock slots); *oldest-first*: the same jobs with priority 0 and no lock (plain "
            "procrastinate). Lateness = `started` - `deferred` event; running jobs sampled "
            "every 50 ms; rates from the first `started` to the last `succeeded` event.",
            table(("measure", "fair", "oldest-first", "target (fair)", ""), rows),
            "Reading 3: a slot's next job starts when a worker fetches again after the job "
            "before it finished. The `metronome_wake_lock_waiters` trigger "
            "(`scheduler/sql/lock_slot_wakeup.sql`) sends procrastinate's new-job notification "
            "when a locked job stops running; without it a worker that found only lock-blocked "
            "jobs waits for its next poll (`--fetch-job-polling-interval`, 5 s by default), and "
            f"a limited tenant alone in the pool runs about {LIMIT} jobs per poll interval. 3b: "
            f"what no limit can beat: procrastinate itself running the same jobs {LIMIT} at a "
            f"time. Its per-job cost (fetch, thread hand-off of a sync task, finish: a few ms "
            f"on this machine) keeps it below {ideal:.0f} jobs/s, so the limit is judged "
            f"against it (3b); the {TARGET_DRAIN:.0%}-of-{ideal:.0f} figure of 3 is shown as "
            "asked. Reading 4a: a fair defer is one statement, the pass upsert (which computes "
            "the virtual time from the waiting jobs) and the job rows built in the database, "
            "inserted by `procrastinate_defer_jobs_v1`.",
        ]
    )


if __name__ == "__main__":
    main()
