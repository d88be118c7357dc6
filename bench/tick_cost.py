"""Benchmark 1 (and 5): one scheduler tick deferring N due Tasks vs raw batch_defer of N jobs.

The tick does more than defer: it locks the due Tasks, plans catch-up and overlap, writes a
TaskRun per job and advances every Task, chunk by chunk (``SCHEDULER_CHUNK_SIZE``). The
question is what that costs over procrastinate's own batch insert of the same jobs (target
≤ 1.0x: the tick builds job rows in the database, where procrastinate's client builds them in
Python), and how much memory the scheduler worker needs meanwhile.

    bench/run.sh tick_cost [--quick] [--repeat 5] [--database-url URL] [--profile]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import breakdown, memory, raw, seed
from bench.common import (
    NOW,
    Options,
    Stopwatch,
    Summary,
    machine,
    parse_options,
    prepare,
    profile,
    publish,
    ratio,
    summarize,
    table,
    verdict,
)

TARGET_RATIO = 1.0
TENANTS = 100


def metronome_tick(expected: int) -> Callable[[], None]:
    def tick() -> None:
        from scheduler.tick import run_tick

        deferred = len(run_tick(NOW).deferred)
        if deferred != expected:
            raise RuntimeError(f"the tick deferred {deferred} runs, expected {expected}")

    return tick


def reset() -> None:
    """Every Task due at NOW again, no run or job left: each repetition starts the same."""
    seed.clear_runs()
    seed.make_due(None)
    seed.vacuum()


def measure(fleet: seed.Fleet, n: int, repeat: int) -> tuple[Summary, Summary]:
    """Alternate which side goes first, so that drift on a noisy machine hits both."""
    sides: dict[str, Callable[[], object]] = {
        "metronome": metronome_tick(n),
        "raw": lambda: raw.batch_defer(fleet, n),
    }
    times: dict[str, list[float]] = {"metronome": [], "raw": []}
    for i in range(repeat):
        for side in sorted(sides, reverse=bool(i % 2)):
            reset()
            with Stopwatch() as sw:
                sides[side]()
            times[side].append(sw.seconds)
    return summarize(times["metronome"]), summarize(times["raw"])


def run(options: Options, url: str) -> list[Sequence[object]]:
    sizes = (100, 300) if options.quick else (1_000, 10_000)
    seed.check_crons(seed.CRONS, seed.ZONES + seed.TASK_ZONES)
    rows = []
    for n in sizes:
        seed.wipe()
        fleet = seed.make_fleet(min(TENANTS, n))
        seed.insert_tasks(fleet, n, due_at=NOW)
        metronome, baseline = measure(fleet, n, options.repeat)
        mem_m = memory.measure(url, "metronome", None, options.repeat)
        mem_r = memory.measure(url, "raw", None, options.repeat)
        met = metronome.median / baseline.median <= TARGET_RATIO
        rows.append(
            (
                f"{n:,}",
                metronome.fmt(),
                baseline.fmt(),
                ratio(metronome, baseline),
                f"≤ {TARGET_RATIO}x",
                verdict(met),
                mem_m.fmt(),
                mem_r.fmt(),
            )
        )
        print(rows[-1], file=sys.stderr)
        if options.profile:
            label = f"run_tick with {n} due Tasks"
            reset()
            breakdown.report(label, breakdown.tick_phases(metronome_tick(n)))
            reset()
            profile(label, metronome_tick(n))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv)
    url = prepare(options)
    info = machine()  # before the run: its load average is the one the run started with
    rows = run(options, url)
    from django.conf import settings

    body = "\n\n".join(
        [
            "## 1. Tick cost (and 5. memory)",
            f"Machine: {info}.",
            f"`bench/run.sh tick_cost` - {options.repeat} runs each, median (min-max); "
            f"sides alternate within each run. N due Tasks over {TENANTS} tenants, "
            f"{len(seed.CRONS)} crons (5 and 6 fields), {len(seed.ZONES)} tenant time zones; "
            f"a tenant's first {len(seed.CRONS)} Tasks read its zone, the others carry one of "
            f"{len(seed.TASK_ZONES)} of their own (no two alike); the tick in chunks of "
            f"{settings.SCHEDULER_CHUNK_SIZE:,}; raw = `JobManager.batch_defer_jobs` of N jobs "
            "of the same task, arguments and queues, one transaction on the same connection.",
            table(
                (
                    "due Tasks",
                    "Metronome tick",
                    "raw batch_defer",
                    "ratio",
                    "target",
                    "",
                    "peak RSS, scheduler worker",
                    "peak RSS, raw",
                ),
                rows,
            ),
            "Peak RSS: Linux `VmHWM` of a fresh process (reset before the block), median "
            "(min-max) over the runs, and its growth over the process at rest; the Metronome "
            "side is a real procrastinate worker on queue `scheduler` running the tick's job, "
            "the raw side defers the same jobs (`bench/memory.py`).",
        ]
    )
    publish(options, "tick_cost", body)


if __name__ == "__main__":
    main()
