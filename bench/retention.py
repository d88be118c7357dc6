"""Benchmark 7: bounded history - purge throughput, and a tick's time while a purge runs.

Seeds N finished TaskRuns past their retention (plus recent ones that must stay) and old
audit entries, then measures in one run:

- a scheduler tick over ``--due`` due Tasks (the ``scheduler`` job, which calls
  ``scheduler.tick.run_tick``, run by a scheduler worker process of its own; its time from
  procrastinate's ``started`` to ``succeeded`` event) in three situations, rotating: alone;
  while another process purges as the maintenance job does (ending when a tick waits,
  pausing while one runs: a second worker serving queue ``scheduler``); and while another
  process purges batch after batch without ever making way (the worst case). Medians;
- the purge of what is left (``scheduler.retention.purge_task_runs``, batches of
  ``RETENTION_BATCH_SIZE``): rows per second, and each batch's duration (how long its row
  locks are held);
- the audit purge (``scheduler.retention.purge_audit_entries``) the same way.

    bench/run.sh retention [--quick] [--repeat 5] [--runs 1000000] [--due 1000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

from bench import seed
from bench.common import (
    NOW,
    Options,
    Stopwatch,
    Summary,
    execute,
    fetch,
    machine,
    parse_options,
    percentile,
    prepare,
    publish,
    ratio,
    setup_django,
    summarize,
    table,
)

TENANTS = 100
RETENTION_DAYS = 90
#: Seeded old rows are this much older than the retention; recent ones a day old.
OLD_AGE = dt.timedelta(days=RETENTION_DAYS + 10)
RECENT_AGE = dt.timedelta(days=1)
#: Job ids of the seeded runs: far above any job a tick creates (those jobs are gone).
GONE_JOB_IDS = 10**12


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=int, default=None, help="old TaskRuns to seed (default 1,000,000)"
    )
    parser.add_argument(
        "--due", type=int, default=None, help="due Tasks per measured tick (default 1,000)"
    )


# --- seeding ----------------------------------------------------------------------------

_INSERT_RUNS = """
    INSERT INTO scheduler_taskrun (task_id, tenant_id, scheduled_for, manual, job_id, status,
                                   attempts, attempt_log, enqueued_at, started_at,
                                   finished_at, error)
    SELECT t.id, t.tenant_id, v.at, false, %(job_base)s + v.g,
           CASE WHEN v.g %% 10 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
           jsonb_build_array(jsonb_build_object(
               'attempt', 1, 'started_at', v.at::text, 'finished_at', v.at::text,
               'worker', 1, 'outcome',
               CASE WHEN v.g %% 10 = 0 THEN 'failed' ELSE 'succeeded' END)),
           v.at, v.at, v.at + interval '2 seconds',
           CASE WHEN v.g %% 10 = 0 THEN 'RuntimeError: the API answered 502' ELSE '' END
      FROM (SELECT g, %(base)s::timestamptz - (g / %(tasks)s) * interval '1 minute' AS at
              FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g) AS v
      JOIN (SELECT id, tenant_id, row_number() OVER (ORDER BY id) - 1 AS k
              FROM scheduler_task) AS t ON t.k = v.g %% %(tasks)s
"""

_INSERT_ENTRIES = """
    INSERT INTO scheduler_auditentry (created_at, username, tenant_id, action, model,
                                      object_id, object_repr, changes)
    SELECT %(base)s::timestamptz - g * interval '1 second', 'bench', 1 + g %% %(tenants)s,
           'change', 'task', (g %% 1000)::text, 'github.get_users [* * * * *]',
           '{"cron": ["* * * * *", "*/5 * * * *"]}'::jsonb
      FROM generate_series(1, %(count)s) AS g
"""


def seed_runs(count: int, tasks: int, base: dt.datetime, *, start: int = 0) -> None:
    """``count`` finished runs spread over the Tasks, one a minute per Task back from
    ``base``; their jobs are gone (ids no job has), as after ``JOB_RETENTION_HOURS``."""
    execute(
        _INSERT_RUNS,
        {
            "job_base": GONE_JOB_IDS,
            "base": base,
            "tasks": tasks,
            "start": start,
            "stop": start + count - 1,
        },
    )


def seed_history(runs: int, due: int) -> tuple[int, int]:
    """The fleet, ``due`` Tasks due at NOW, ``runs`` old runs and a few recent ones, old
    and recent audit entries. Returns (recent runs, recent entries): they must stay."""
    from django.conf import settings

    seed.wipe()
    execute("TRUNCATE scheduler_taskrun, scheduler_auditentry RESTART IDENTITY")
    fleet = seed.make_fleet(min(TENANTS, due))
    seed.insert_tasks(fleet, due, due_at=NOW)
    now = dt.datetime.now(dt.UTC)
    recent = max(due, runs // 100)
    # Seeded in chunks: one statement for a million rows would hold a huge snapshot.
    chunk = 200_000
    for start in range(0, runs, chunk):
        seed_runs(min(chunk, runs - start), due, now - OLD_AGE, start=start)
    seed_runs(recent, due, now - RECENT_AGE)
    entries = max(3 * settings.RETENTION_BATCH_SIZE, runs // 10)  # a few batches at least
    execute(_INSERT_ENTRIES, {"base": now - OLD_AGE * 4, "tenants": TENANTS, "count": entries})
    execute(_INSERT_ENTRIES, {"base": now - RECENT_AGE, "tenants": TENANTS, "count": 100})
    seed.vacuum("scheduler_task", "scheduler_taskrun", "scheduler_auditentry")
    return recent, 100


# --- the tick ---------------------------------------------------------------------------


def reset_tick(due: int) -> None:
    """The tick's own runs and jobs gone, its Tasks due at NOW again (old runs untouched)."""
    execute("DELETE FROM scheduler_taskrun WHERE scheduled_for = %s", [NOW])
    execute(
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
        "scheduler_schedulertick RESTART IDENTITY CASCADE"
    )
    seed.make_due(None)
    seed.vacuum("scheduler_task", "procrastinate_jobs")


def _tick_worker(url: str) -> None:
    """A scheduler worker of its own (as in production), for the tick jobs deferred here:
    the periodic deferrer is off, so it runs nothing at the clock's time."""
    setup_django(url, migrate=False)
    from procrastinate.contrib.django import app

    app.periodic_registry.periodic_tasks = {}
    with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
        worker_app.run_worker(queues=["scheduler"], wait=True, listen_notify=True)


def start_tick_worker(url: str) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(target=_tick_worker, args=(url,), daemon=True)
    process.start()
    return process


def stop(process: mp.process.BaseProcess) -> None:
    process.terminate()  # SIGTERM: procrastinate's worker stops gracefully
    process.join(30)
    if process.is_alive():
        process.kill()


def tick_job(due: int) -> float:
    """Defer the tick's job for NOW and wait for the scheduler worker to run it; its run
    time, from procrastinate's ``started`` to ``succeeded`` event."""
    from procrastinate.contrib.django import app

    job_id = app.configure_task("scheduler").defer(timestamp=int(NOW.timestamp()))
    deadline = time.monotonic() + 600
    while True:
        (status,) = fetch("SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id])[0]
        if status not in ("todo", "doing"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the scheduler worker did not run the tick's job")
        time.sleep(0.002)
    at = dict(fetch("SELECT type::text, at FROM procrastinate_events WHERE job_id = %s", [job_id]))
    if status != "succeeded":
        raise RuntimeError(f"the tick's job ended {status}")
    deferred = fetch("SELECT count(*) FROM scheduler_taskrun WHERE scheduled_for = %s", [NOW])[0][0]
    if deferred != due:
        raise RuntimeError(f"the tick deferred {deferred} runs, expected {due}")
    return (at["succeeded"] - at["started"]).total_seconds()


#: What the purger does: nothing, purge as the maintenance job does (making way for any
#: tick), or purge without ever making way (the worst case).
OFF, POLITE, GREEDY = 0, 1, 2


@dataclass
class Purger:
    """A process of its own that purges TaskRuns batch after batch in the given mode;
    counts what it deleted and says when it is idle or has run out of rows."""

    process: mp.process.BaseProcess
    mode: Synchronized
    idle: Event
    exhausted: Event
    batches: Synchronized
    deleted: Synchronized

    def start(self, mode: int) -> None:
        """Return once the purge is under way (its first batch done)."""
        started = self.batches.value
        self.idle.clear()
        self.mode.value = mode
        while self.batches.value == started and not self.exhausted.is_set():
            time.sleep(0.001)

    def stop(self) -> None:
        self.mode.value = OFF
        self.idle.wait(60)

    def close(self) -> None:
        self.mode.value = -1
        self.process.join(30)


def _purge_loop(
    url: str,
    batch_size: int,
    mode: Synchronized,
    idle: Event,
    exhausted: Event,
    batches: Synchronized,
    deleted: Synchronized,
) -> None:
    setup_django(url, migrate=False)
    from scheduler.retention import Pacing, purge_task_runs, tick_running, tick_waiting

    while mode.value >= 0:
        if mode.value == OFF:
            idle.set()
            time.sleep(0.005)
            continue
        # One batch per call (deadline -inf); the maintenance job's yield check before it.
        if mode.value == POLITE:  # as the maintenance job does (the deadline ends pauses)
            pacing = Pacing(
                batch_size, float("-inf"), stop_if=tick_waiting, pause_while=tick_running
            )
        else:
            pacing = Pacing(batch_size, float("-inf"))
        result = purge_task_runs(retention_days=RETENTION_DAYS, pacing=pacing)
        if not result.batches:  # made way for a tick
            time.sleep(0.005)
            continue
        with batches.get_lock():
            batches.value += 1
        with deleted.get_lock():
            deleted.value += result.deleted
        if result.deleted < batch_size:
            exhausted.set()


def start_purger(url: str, batch_size: int) -> Purger:
    context = mp.get_context("spawn")  # a fresh interpreter: no inherited connection
    mode = context.Value("i", OFF)
    idle, exhausted = context.Event(), context.Event()
    counters = [context.Value("q", 0), context.Value("q", 0)]
    process = context.Process(
        target=_purge_loop,
        args=(url, batch_size, mode, idle, exhausted, *counters),
        daemon=True,
    )
    process.start()
    purger = Purger(process, mode, idle, exhausted, *counters)
    if not purger.idle.wait(120):
        raise RuntimeError("the purge process did not start")
    return purger


SIDES = {"alone": OFF, "maintenance": POLITE, "greedy": GREEDY}


def measure_ticks(
    url: str, due: int, repeat: int, batch_size: int
) -> tuple[dict[str, Summary], int]:
    """Tick times alone, beside the maintenance job's purge and beside a purge that never
    makes way (sides rotating); rows the purger deleted meanwhile."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    order = list(SIDES)
    worker = start_tick_worker(url)
    purger = start_purger(url, batch_size)
    try:
        tick_job(due)  # the worker is up and warm
        for i in range(repeat):
            for side in order[i % 3 :] + order[: i % 3]:
                reset_tick(due)
                if SIDES[side] != OFF:
                    purger.start(SIDES[side])
                times[side].append(tick_job(due))
                if purger.exhausted.is_set():
                    raise RuntimeError(
                        "the purge ran out of rows during a tick: seed more (--runs)"
                    )
                purger.stop()
    finally:
        purger.close()
        stop(worker)
    reset_tick(due)
    return {side: summarize(values) for side, values in times.items()}, purger.deleted.value


# --- the purges -------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeRun:
    deleted: int
    seconds: float
    batch_seconds: list[float]

    @property
    def rate(self) -> float:
        return self.deleted / self.seconds if self.seconds else float("nan")

    def batches(self) -> str:
        laps = self.batch_seconds  # every batch but the last (short) one
        return (
            f"{len(laps) + 1:,} batches; per batch median {percentile(laps, 50) * 1000:.0f} ms, "
            f"p99 {percentile(laps, 99) * 1000:.0f} ms, max {max(laps) * 1000:.0f} ms"
        )


def timed_purge(which: str, batch_size: int) -> PurgeRun:
    """One purge to the end, no time budget; each full batch's duration recorded."""
    from scheduler.retention import Pacing, purge_audit_entries, purge_task_runs

    laps: list[float] = []
    last: list[float] = []

    def lap() -> bool:  # asked before each batch: records the one before, never stops
        now = time.perf_counter()
        if last:
            laps.append(now - last[0])
        last[:] = [now]
        return False

    pacing = Pacing(batch_size, float("inf"), stop_if=lap)
    purge = purge_task_runs if which == "runs" else purge_audit_entries
    with Stopwatch() as sw:
        result = purge(retention_days=RETENTION_DAYS, pacing=pacing)
    if not result.complete or result.batches < 2:
        raise RuntimeError(f"the {which} purge stopped early or had too little to do: seed more")
    return PurgeRun(result.deleted, sw.seconds, laps)


def count_old(table_name: str, column: str) -> int:
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    return fetch(f"SELECT count(*) FROM {table_name} WHERE {column} < %s", [cutoff])[0][0]


# --- the report -------------------------------------------------------------------------


def run(options: Options, url: str) -> tuple[list[Sequence[object]], str]:
    from django.conf import settings

    runs = options.extra.runs or (100_000 if options.quick else 1_000_000)
    due = options.extra.due or (50 if options.quick else 1_000)
    batch_size = settings.RETENTION_BATCH_SIZE
    budget = settings.RETENTION_BUDGET_SECONDS
    seed.check_crons(seed.CRONS, seed.ZONES)
    with Stopwatch() as seeding:
        recent_runs, recent_entries = seed_history(runs, due)
    print(f"seeded {runs:,} old runs in {seeding.seconds:.1f} s", file=sys.stderr)

    ticks, deleted_meanwhile = measure_ticks(url, due, options.repeat, batch_size)
    alone = ticks["alone"]
    print({side: summary.fmt() for side, summary in ticks.items()}, file=sys.stderr)
    tasks = timed_purge("runs", batch_size)
    entries = timed_purge("entries", batch_size)

    kept_runs = fetch("SELECT count(*) FROM scheduler_taskrun")[0][0]
    kept_entries = fetch("SELECT count(*) FROM scheduler_auditentry")[0][0]
    if count_old("scheduler_taskrun", "enqueued_at") or kept_runs != recent_runs:
        raise RuntimeError(f"after the purge {kept_runs} runs are left, not {recent_runs}")
    if count_old("scheduler_auditentry", "created_at") or kept_entries != recent_entries:
        raise RuntimeError(f"after the purge {kept_entries} entries left, not {recent_entries}")
    if deleted_meanwhile + tasks.deleted != runs:
        raise RuntimeError(f"{deleted_meanwhile + tasks.deleted} runs purged, not {runs}")

    per_run = tasks.rate * budget
    rows = [
        (
            f"TaskRun purge ({tasks.deleted:,} rows past {RETENTION_DAYS} days)",
            f"{tasks.rate:,.0f} rows/s",
            tasks.batches(),
        ),
        (
            f"audit purge ({entries.deleted:,} rows)",
            f"{entries.rate:,.0f} rows/s",
            entries.batches(),
        ),
        (
            f"one maintenance run ({budget} s budget)",
            f"up to ~{per_run:,.0f} runs",
            "deleted per minute at most: the herd of 100,000 runs a minute needs 100,000",
        ),
        (f"tick, {due:,} due, no purge", alone.fmt(), ""),
        (
            f"tick, {due:,} due, maintenance purge running on another worker",
            ticks["maintenance"].fmt(),
            f"{ratio(ticks['maintenance'], alone)} of alone: the purge makes way for the tick",
        ),
        (
            f"tick, {due:,} due, a purge that never makes way (worst case)",
            ticks["greedy"].fmt(),
            f"{ratio(ticks['greedy'], alone)} of alone: CPU shared with the purge "
            f"({deleted_meanwhile:,} rows purged during the ticks)",
        ),
    ]
    notes = (
        f"Notes: {runs:,} old runs and {recent_runs:,} recent ones over {due:,} Tasks of "
        f"{min(TENANTS, due)} tenants (10 % failed with an error), seeded in "
        f"{seeding.seconds:.1f} s; every recent run and audit entry was still there after "
        "the purges, every old one gone."
    )
    return rows, notes


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    url = prepare(options)
    info = machine()
    rows, notes = run(options, url)
    from django.conf import settings

    body = "\n\n".join(
        [
            "## 7. Retention",
            f"Machine: {info}.",
            f"`bench/run.sh retention` - tick times: {options.repeat} runs each, median "
            "(min-max), situations rotating; the tick is the `scheduler` job run by a "
            "scheduler worker process, timed from its `started` to its `succeeded` event. "
            "The purge beside it runs in another process from just before the tick is "
            "deferred until it ends: as the maintenance job purges (ending when a tick "
            "waits, pausing while one runs), or batch after batch without ever making way. "
            f"Purges: batches of {settings.RETENTION_BATCH_SIZE:,} rows (one statement, its "
            "own transaction), no budget, until nothing is left.",
            table(("measure", "result", ""), rows),
            notes,
        ]
    )
    publish(options, "retention", body)


if __name__ == "__main__":
    main()
