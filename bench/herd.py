"""Benchmark: the midnight herd, N Tasks due at one instant, against the SQL floor.

Side by side in one run, on the same seeded database (N due Tasks over T tenants):

- **SQL floor**: one ``INSERT … SELECT`` of the same N job rows into ``procrastinate_jobs``
  (same queues, task name and argument shape), triggers included, one transaction;
- **raw procrastinate**: ``JobManager.batch_defer_jobs`` of the same N jobs (``bench/raw.py``);
- **the tick, end to end**, with one and with two real scheduler workers
  (``manage.py procrastinate worker --queues=scheduler``, fresh processes, their default
  chunk size unless ``--chunk-size``): from the boundary (the commit of the tick's
  ``scheduler`` job) to the first committed tenant job, and to the last (every due Task
  advanced: a chunk advances its Tasks in the transaction that commits its jobs), polled
  every ~10 ms with two cheap queries; and each worker's peak RSS (``VmHWM``, read before
  it is stopped).

Targets (P5): every job committed ≤ 2.0x the SQL floor after the boundary, the first jobs
≤ 1 s after it, the scheduler worker's peak RSS ≤ 200 MiB; two schedulers ≥ 1.6x faster
than one.

    bench/run.sh herd [--quick] [--repeat 3] [--tasks N] [--tenants T] [--chunk-size C]
                      [--database-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import raw, seed
from bench.common import (
    NOW,
    ROOT,
    Stopwatch,
    execute,
    fetch,
    machine,
    parse_options,
    prepare,
    publish,
    summarize,
    table,
    verdict,
)

TARGET_FLOOR_RATIO = 2.0
TARGET_FIRST_SECONDS = 1.0
TARGET_RSS_MIB = 200.0
TARGET_SPEEDUP = 1.6
#: How often the bench polls for committed jobs while a tick runs.
POLL_SECONDS = 0.01


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=None, help="due Tasks (default 100,000)")
    parser.add_argument("--tenants", type=int, default=None, help="tenants (default 1,000)")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="the workers' SCHEDULER_CHUNK_SIZE (default: theirs; --quick: 500, so that even "
        "a small herd has chunks to split)",
    )


@dataclass
class Sides:
    """Every repetition's numbers, per side: seconds to the first and to the last committed
    job after the side started (the boundary, for the ticks), and peak RSS in MiB."""

    first: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)

    def add(self, side: str, first: float, last: float, rss: float | None = None) -> None:
        self.first.setdefault(side, []).append(first)
        self.last.setdefault(side, []).append(last)
        if rss is not None:
            self.rss.setdefault(side, []).append(rss)


# --- the database state -----------------------------------------------------------------


def reset() -> None:
    """Every Task due at NOW, no run, job or tick left, passes forgotten: each side starts
    from the same state."""
    seed.clear_runs()
    execute("DELETE FROM scheduler_tenantpass")
    seed.make_due(None)
    seed.vacuum()


def committed_jobs() -> int:
    (count,) = fetch("SELECT count(*) FROM procrastinate_jobs WHERE queue_name <> 'scheduler'")[0]
    return count


# --- the floor and raw procrastinate ------------------------------------------------------

_FLOOR_SQL = """
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, queueing_lock, args)
    SELECT t.tenant_id::text, 'github.get_users', 0, NULL, NULL,
           jsonb_build_object(
               'task_id', t.id, 'scheduled_for', %(when)s::text,
               'integration_id', t.integration_id, 'kwargs', t.kwargs,
               'retry', jsonb_build_object(
                   'max_attempts', t.max_attempts,
                   'backoff_seconds', extract(epoch FROM t.retry_backoff)))
      FROM scheduler_task t
     WHERE t.enabled AND t.next_run_at <= %(now)s
"""


def sql_floor(n: int) -> float:
    """One INSERT … SELECT of the herd's N job rows, committed; its seconds."""
    from django.db import transaction

    with Stopwatch() as sw, transaction.atomic():
        inserted = execute(_FLOOR_SQL, {"when": NOW.isoformat(), "now": NOW})
    if inserted != n:
        raise RuntimeError(f"the SQL floor inserted {inserted} jobs, not {n}")
    return sw.seconds


def raw_batch_defer(fleet: seed.Fleet, n: int) -> float:
    """procrastinate's ``batch_defer_jobs`` of N jobs, in one transaction; its seconds."""
    with Stopwatch() as sw:
        raw.batch_defer(fleet, n)
    return sw.seconds


# --- the tick, with real scheduler workers ----------------------------------------------


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory so far (``VmHWM``), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    if found is None:
        raise RuntimeError(f"no VmHWM in /proc/{pid}/status")
    return int(found.group(1)) / 1024


def wait_until(check: Callable[[], bool], what: str, timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def scheduler_idle() -> bool:
    """No job waits or runs on queue ``scheduler`` (ticks, helpers, maintenance)."""
    (busy,) = fetch(
        "SELECT count(*) FROM procrastinate_jobs "
        "WHERE queue_name = 'scheduler' AND status IN ('todo', 'doing')"
    )[0]
    return busy == 0


@contextlib.contextmanager
def scheduler_workers(
    url: str, count: int, chunk_size: int | None, threads: int | None
) -> Iterator[list[subprocess.Popen]]:
    """``count`` fresh scheduler workers, announced (so that the tick counts them as live
    helpers) and idle, until the block ends (SIGTERM)."""
    from scheduler.models import WorkerInfo

    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
    if chunk_size:
        env["SCHEDULER_CHUNK_SIZE"] = str(chunk_size)
    if threads:
        env["SCHEDULER_TICK_THREADS"] = str(threads)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryFile(mode="w+") as log:
        try:
            for i in range(count):
                command = [sys.executable, "manage.py", "procrastinate", "worker"]
                command += ["--queues=scheduler", f"--name=herd-scheduler-{i}"]
                procs.append(
                    subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )

            def ready() -> bool:
                if any(p.poll() is not None for p in procs):
                    log.seek(0)
                    raise RuntimeError(f"bench: a scheduler worker exited:\n{log.read()}")
                announced = WorkerInfo.objects.filter(pid__in=[p.pid for p in procs]).count()
                return announced == count and scheduler_idle()

            wait_until(ready, f"{count} live, idle scheduler workers", timeout=120)
            yield procs
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


_FIRST_SQL = "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE queue_name <> 'scheduler')"
# On the tick's own index (task_due_idx): a Task stops matching when its chunk commits.
_DUE_LEFT_SQL = "SELECT EXISTS (SELECT 1 FROM scheduler_task WHERE enabled AND next_run_at <= %s)"


def tick(
    url: str, workers: int, n: int, chunk_size: int | None, threads: int | None = None
) -> tuple[float, float, float]:
    """The herd's tick, run by ``workers`` fresh scheduler workers (``threads`` tick threads
    each, None: their default): seconds from the boundary to the first and to the last
    committed job, and the highest worker peak RSS (MiB)."""
    from scheduler.jobs import defer_scheduler_job

    timestamp = int(NOW.timestamp())
    with scheduler_workers(url, workers, chunk_size, threads) as procs:
        defer_scheduler_job("scheduler", {"timestamp": timestamp}, f"herd-{timestamp}")
        boundary = time.perf_counter()  # committed (autocommit) when the call returns
        first: float | None = None
        last: float | None = None
        deadline = boundary + 600
        while last is None:
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"bench: the herd's tick did not finish in 600 s ({workers})")
            if first is None and fetch(_FIRST_SQL)[0][0]:
                first = now - boundary
            if first is not None and not fetch(_DUE_LEFT_SQL, [NOW])[0][0]:
                last = time.perf_counter() - boundary
            time.sleep(POLL_SECONDS)
        assert first is not None
        wait_until(scheduler_idle, "the tick's jobs to end", timeout=120)
        rss = max(peak_rss_mib(p.pid) for p in procs)
    (runs,) = fetch("SELECT count(*) FROM scheduler_taskrun")[0]
    if runs != n or committed_jobs() != n:
        raise RuntimeError(f"the tick deferred {runs} runs and {committed_jobs()} jobs, not {n}")
    if workers > 1:
        (helped,) = fetch(
            "SELECT count(*) FROM scheduler_schedulertick WHERE tick_time = %s AND deferred > 0",
            [NOW],
        )[0]
        if helped < 2:
            print(f"bench: only {helped} of {workers} schedulers deferred runs", file=sys.stderr)
    return first, last, rss


# --- the run ------------------------------------------------------------------------------


def measure(url: str, fleet: seed.Fleet, n: int, repeat: int, chunk_size: int | None) -> Sides:
    """Each side once per repetition, in alternating order, from the same state."""
    result = Sides()

    def floor() -> None:
        seconds = sql_floor(n)
        result.add("floor", seconds, seconds)

    def batch() -> None:
        seconds = raw_batch_defer(fleet, n)
        result.add("raw", seconds, seconds)

    def ticks(name: str, workers: int, threads: int | None) -> Callable[[], None]:
        def run() -> None:
            result.add(name, *tick(url, workers, n, chunk_size, threads))

        return run

    sides: dict[str, Callable[[], None]] = {
        "floor": floor,
        "raw": batch,
        "tick1": ticks("tick1", 1, None),
        "tick1x1": ticks("tick1x1", 1, 1),
        "tick2x1": ticks("tick2x1", 2, 1),
    }
    for i in range(repeat):
        for name in sorted(sides, reverse=bool(i % 2)):
            reset()
            sides[name]()
            print(
                f"bench: {name} {result.first[name][-1]:.3f}/{result.last[name][-1]:.3f} s",
                file=sys.stderr,
            )
    return result


def report(result: Sides, n: int, tenants: int, repeat: int, chunk: str, info: str) -> str:
    first = {side: summarize(values) for side, values in result.first.items()}
    last = {side: summarize(values) for side, values in result.last.items()}
    rss = {side: summarize(values) for side, values in result.rss.items()}
    floor = last["floor"].median

    def vs_floor(side: str) -> str:
        return f"{last[side].median / floor:.2f}x" if floor else "n/a"

    def memory(side: str) -> str:
        return rss[side].fmt("MiB", digits=0) if side in rss else "-"

    labels = {
        "floor": "SQL floor: one `INSERT … SELECT` into `procrastinate_jobs`",
        "raw": "raw procrastinate `batch_defer_jobs`",
        "tick1": "Metronome tick, one scheduler worker (default: 2 tick threads)",
        "tick1x1": "Metronome tick, one scheduler worker, 1 tick thread",
        "tick2x1": "Metronome tick, two scheduler workers, 1 tick thread each",
    }
    sides = table(
        ("side", "first job committed", "every job committed", "vs SQL floor", "peak RSS"),
        [
            (labels[side], first[side].fmt(), last[side].fmt(), vs_floor(side), memory(side))
            for side in ("floor", "raw", "tick1", "tick1x1", "tick2x1")
        ],
    )
    ratio = last["tick1"].median / floor if floor else float("inf")
    single, split = last["tick1x1"].median, last["tick2x1"].median
    speedup = single / split if split else 0.0
    peak = max(rss[side].median for side in ("tick1", "tick1x1", "tick2x1"))
    targets = table(
        ("target", "measured", "goal", ""),
        [
            (
                "P5 every job committed after the boundary, one scheduler",
                f"{ratio:.2f}x the SQL floor",
                f"≤ {TARGET_FLOOR_RATIO}x",
                verdict(ratio <= TARGET_FLOOR_RATIO),
            ),
            (
                "P5 first jobs committed after the boundary, one scheduler",
                f"{first['tick1'].median:.3f} s",
                f"≤ {TARGET_FIRST_SECONDS:.0f} s",
                verdict(first["tick1"].median <= TARGET_FIRST_SECONDS),
            ),
            (
                "P5 scheduler worker peak RSS",
                f"{peak:.0f} MiB",
                f"≤ {TARGET_RSS_MIB:.0f} MiB",
                verdict(peak <= TARGET_RSS_MIB),
            ),
            (
                "two schedulers split the herd (1 tick thread each, against one)",
                f"{speedup:.2f}x faster than one",
                f"≥ {TARGET_SPEEDUP}x",
                verdict(speedup >= TARGET_SPEEDUP),
            ),
        ],
    )
    return "\n\n".join(
        [
            "## 8. The midnight herd (P5)",
            f"Machine: {info}.",
            f"`bench/run.sh herd` - {n:,} Tasks due at one instant over {tenants:,} tenants; "
            f"{repeat} runs each, median (min-max), sides in alternating order, each from the "
            "same state. The ticks run in fresh `manage.py procrastinate worker "
            f"--queues=scheduler` processes (chunk size {chunk}), timed from the boundary (the "
            "commit of the tick's `scheduler` job) to the first committed tenant job and to "
            "the last (every due Task advanced), polled every ~10 ms; the floor and raw "
            "procrastinate commit every job at once. Peak RSS: each worker's `VmHWM` (the "
            "higher of the two with two workers). The split is measured with one tick "
            "thread per worker: with the default two, one worker already keeps this 2-core "
            "machine busy.",
            sides,
            targets,
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    n = options.extra.tasks or (2_000 if options.quick else 100_000)
    tenants = options.extra.tenants or (50 if options.quick else 1_000)
    repeat = options.extra.repeat or (2 if options.quick else 3)
    url = prepare(options)
    from django.conf import settings

    info = machine()  # before the run: its load average is the one the run started with
    seed.check_crons(seed.CRONS, seed.ZONES + seed.TASK_ZONES)
    seed.wipe()
    fleet = seed.make_fleet(min(tenants, n))
    seed.insert_tasks(fleet, n, due_at=NOW)
    chunk_size = options.extra.chunk_size or (500 if options.quick else None)
    result = measure(url, fleet, n, repeat, chunk_size)
    chunk = f"{chunk_size:,}" if chunk_size else f"{settings.SCHEDULER_CHUNK_SIZE:,}, the default"
    publish(options, "herd", report(result, n, tenants, repeat, chunk, info))


if __name__ == "__main__":
    main()
