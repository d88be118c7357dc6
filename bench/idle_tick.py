"""Benchmark 2 (and 5): a tick's cost grows with the due Tasks, not with the total.

Most ticks find nothing due; with a SCHEDULER_PERIOD of one second a scheduler runs 86,400
of them a day, so an idle tick over 100,000 enabled Tasks must stay cheap (target ≤ 50 ms).
The table grows the Task table (10k, 100k, 1M rows; ``--max-total`` caps it) and makes
0, 100 and 1,000 of them due.

Raw procrastinate has no Tasks: its side is what it does anyway, per tick, for a periodic
task (one ``defer_periodic_job`` query) when nothing is due, and ``batch_defer_jobs`` of the
due count otherwise.

    bench/run.sh idle_tick [--quick] [--repeat 5] [--max-total 1000000] [--profile]
"""

from __future__ import annotations

import argparse
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

TARGET_IDLE_MS = 50.0
TARGET_TOTAL = 1_000_000
TENANTS = 1_000


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-total",
        type=int,
        default=1_000_000,
        help="largest Task table to seed (1,000,000 takes a minute or two to seed)",
    )


def tick(expected: int) -> Callable[[], None]:
    def run() -> None:
        from scheduler.tick import run_tick

        deferred = len(run_tick(NOW).deferred)
        if deferred != expected:
            raise RuntimeError(f"the tick deferred {deferred} runs, expected {expected}")

    return run


def reset(due: int) -> None:
    """No run or job left, and the first ``due`` Tasks due (the others stay as they are)."""
    seed.clear_runs()
    seed.make_due(due)
    seed.vacuum("scheduler_task", "scheduler_taskrun", "procrastinate_jobs")


def measure(fleet: seed.Fleet, due: int, repeat: int) -> tuple[Summary, Summary]:
    stamp = int(NOW.timestamp())
    sides: dict[str, Callable[[], object]] = {
        "metronome": tick(due),
        "raw": (lambda: raw.batch_defer(fleet, due))
        if due
        else (lambda: raw.periodic_defer(stamp)),
    }
    times: dict[str, list[float]] = {"metronome": [], "raw": []}
    for i in range(repeat):
        for side in sorted(sides, reverse=bool(i % 2)):
            reset(due if side == "metronome" else 0)  # the tick moves its due Tasks on
            with Stopwatch() as sw:
                sides[side]()
            times[side].append(sw.seconds)
    return summarize(times["metronome"]), summarize(times["raw"])


def run(options: Options, url: str) -> tuple[list[Sequence[object]], list[str]]:
    totals = (500, 2_000) if options.quick else (10_000, 100_000, 1_000_000)
    totals = tuple(t for t in totals if t <= options.extra.max_total) or totals[:1]
    dues = (0, 10) if options.quick else (0, 100, 1_000)
    tenants = 10 if options.quick else TENANTS
    seed.wipe()
    fleet = seed.make_fleet(tenants)
    rows: list[Sequence[object]] = []
    notes: list[str] = [f"{tenants} tenants"]
    idle: dict[int, Summary] = {}
    seeded = 0
    for total in totals:
        with Stopwatch() as seeding:
            seed.insert_tasks(fleet, total - seeded, due_at=None, offset=seeded)
            seed.vacuum("scheduler_task")
        notes.append(f"{total - seeded:,} Tasks seeded in {seeding.seconds:.1f} s")
        print(notes[-1], file=sys.stderr)
        seeded = total
        for due in dues:
            metronome, baseline = measure(fleet, due, options.repeat)
            target, met, mem = "", "", ""
            if due == 0:
                idle[total] = metronome
                target = f"≤ {TARGET_IDLE_MS:.0f} ms" + (
                    " (at 1M)" if total != TARGET_TOTAL else ""
                )
                met = verdict(metronome.median * 1000 <= TARGET_IDLE_MS)
                mem = memory.measure(url, "metronome", 0, options.repeat).fmt()
            rows.append(
                (
                    f"{total:,}",
                    f"{due:,}",
                    metronome.fmt("ms", 1000, 1),
                    baseline.fmt("ms", 1000, 1),
                    ratio(metronome, baseline),
                    target,
                    met,
                    mem,
                )
            )
            print(rows[-1], file=sys.stderr)
            if options.profile and due in (0, dues[-1]):
                label = f"tick over {total:,} Tasks, {due:,} due"
                reset(due)
                breakdown.report(label, breakdown.tick_phases(tick(due)))
                reset(due)
                profile(label, tick(due))
    first, last = min(idle), max(idle)
    notes.append(
        f"idle tick at {last:,} Tasks / at {first:,} Tasks = "
        f"{idle[last].median / idle[first].median:.2f}x for {last // first:,}x the rows"
    )
    return rows, notes


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    url = prepare(options)
    info = machine()
    rows, notes = run(options, url)
    body = "\n\n".join(
        [
            "## 2. Idle tick, and tick cost against total Tasks (and 5. memory)",
            f"Machine: {info}.",
            f"`bench/run.sh idle_tick` - {options.repeat} runs each, median (min-max), sides "
            "alternating. Enabled Tasks, mixed crons and zones, none due "
            "but the first *due* (by id). Raw: one `defer_periodic_job` (what procrastinate "
            "does per tick for its own periodic task) when nothing is due, else "
            "`batch_defer_jobs` of the due count.",
            table(
                (
                    "total Tasks",
                    "due",
                    "Metronome tick",
                    "raw procrastinate",
                    "ratio",
                    "target",
                    "",
                    "peak RSS, scheduler worker (idle tick)",
                ),
                rows,
            ),
            "Notes: " + "; ".join(notes) + ". Peak RSS measured as in section 1.",
        ]
    )
    publish(options, "idle_tick", body)


if __name__ == "__main__":
    main()
