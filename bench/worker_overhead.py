"""Benchmark 4: no-op jobs per second through a Metronome Task vs a bare procrastinate task.

A Metronome job carries more than its function: the scheduler's middleware marks the
TaskRun running then finished (two UPDATEs), and the integration wrapper loads the
Integration and its tenant. Both sides run on the same in-process worker (concurrency 1,
polling, procrastinate's Django app with its connection cleanup and Metronome's worker-wide
middleware), so the ratio is that overhead alone (target ≥ 90 %).

The no-op integration type exists only in this process: it is registered the way
``tests/conftest.py`` registers its ``probe`` type, which is also why the worker runs in
process (a ``manage.py`` worker would not know it).

    bench/run.sh worker_overhead [--quick] [--repeat 5] [--jobs 1000] [--profile]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bench import seed
from bench.common import (
    NOW,
    Summary,
    fetch,
    machine,
    parse_options,
    prepare,
    publish,
    summarize,
    table,
    verdict,
)

TARGET = 0.90
RAW_QUEUE = "bench-raw"
NOOP_TYPE = "benchnoop"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 1000)")


def register_noop_tasks() -> None:
    """A no-op integration type (bench process only) and a bare no-op procrastinate task."""
    from procrastinate.contrib.django import app

    from integrations.base.registry import IntegrationType, register
    from integrations.base.tasks import RunContext, integration_task

    class BenchNoop(IntegrationType):
        name = NOOP_TYPE

    register(BenchNoop)

    @integration_task(BenchNoop)
    def noop(run: RunContext) -> None:
        return None

    @app.task(name="bench.noop", queue=RAW_QUEUE)
    def bare_noop(n: int) -> None:
        return None


def run_worker(queue: str, task_middleware: list[Callable[..., Any]] | None = None) -> None:
    """Drain ``queue`` with one in-process worker, then return (``wait=False``)."""
    from procrastinate.contrib.django import app

    options: dict[str, Any] = {}
    if task_middleware is not None:
        options["task_middleware"] = task_middleware
    periodic = app.periodic_registry.periodic_tasks
    app.periodic_registry.periodic_tasks = {}  # no scheduler job in the way
    try:
        with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
            worker_app.run_worker(
                queues=[queue],
                wait=False,
                install_signal_handlers=False,
                listen_notify=False,
                **options,
            )
    finally:
        app.periodic_registry.periodic_tasks = periodic


def _throughput(expected: int) -> float:
    """Jobs per second from the first job's start to the last one's end (procrastinate's
    own events), so the worker's start and stop are not counted."""
    ((done, first, last),) = fetch(
        "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
        "  min(at) FILTER (WHERE type = 'started'), max(at) FILTER (WHERE type = 'succeeded') "
        "FROM procrastinate_events"
    )
    if done != expected:
        raise RuntimeError(f"{done} jobs succeeded, expected {expected}")
    return expected / (last - first).total_seconds()


def _check_tracked(jobs: int) -> None:
    (tracked,) = fetch("SELECT count(*) FROM scheduler_taskrun WHERE status = 'succeeded'")[0]
    if tracked != jobs:
        raise RuntimeError(f"{tracked} TaskRuns succeeded, expected {jobs}")


def prepare_metronome(jobs: int) -> str:
    """``jobs`` due no-op Tasks of one tenant, turned into jobs by a real tick."""
    from scheduler.tick import run_tick

    seed.clear_runs()
    seed.make_due(None)
    deferred = len(run_tick(NOW).deferred)
    if deferred != jobs:
        raise RuntimeError(f"the tick deferred {deferred} runs, expected {jobs}")
    seed.vacuum("procrastinate_jobs", "scheduler_taskrun")
    return str(fetch("SELECT id FROM tenants_tenant")[0][0])


def prepare_raw(jobs: int) -> str:
    from procrastinate.contrib.django import app

    seed.clear_runs()
    app.tasks["bench.noop"].batch_defer(*({"n": i} for i in range(jobs)))
    seed.vacuum("procrastinate_jobs")
    return RAW_QUEUE


def measure(jobs: int, repeat: int) -> tuple[Summary, Summary]:
    sides = {"metronome": prepare_metronome, "raw": prepare_raw}
    rates: dict[str, list[float]] = {"metronome": [], "raw": []}
    for i in range(repeat):
        for side in sorted(sides, reverse=bool(i % 2)):
            queue = sides[side](jobs)
            run_worker(queue)
            rates[side].append(_throughput(jobs))
            if side == "metronome":
                _check_tracked(jobs)
    return summarize(rates["metronome"]), summarize(rates["raw"])


def profile_jobs(jobs: int) -> None:
    """cProfile the job threads (where sync tasks and their middleware run): a bench-only
    outermost middleware enables one profiler around every job."""
    import cProfile
    import io
    import pstats

    from procrastinate.contrib.django import app

    for side, prepare_side in (("metronome", prepare_metronome), ("raw", prepare_raw)):
        profiler = cProfile.Profile()

        def profiled(call_next: Callable[[], Any], context: Any, worker: Any) -> Any:
            profiler.enable()  # noqa: B023 - used within this loop iteration only
            try:
                return call_next()
            finally:
                profiler.disable()  # noqa: B023

        queue = prepare_side(jobs)
        run_worker(queue, [profiled, *app.worker_defaults.get("task_middleware", [])])
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(22)
        print(f"--- cProfile of the job threads, {side}, {jobs} jobs ---\n{out.getvalue()}")


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    prepare(options)
    info = machine()
    register_noop_tasks()
    jobs = options.extra.jobs or (20 if options.quick else 1_000)
    seed.wipe()
    fleet = seed.make_fleet(1, integration=NOOP_TYPE, prefix="noop")
    seed.insert_tasks(fleet, jobs, due_at=NOW, name="noop", overlap="allow")
    metronome, raw = measure(jobs, options.repeat)
    share = metronome.median / raw.median
    print((metronome, raw), file=sys.stderr)
    if options.profile:
        profile_jobs(jobs)
    from django.conf import settings

    conn_max_age = settings.DATABASES["default"]["CONN_MAX_AGE"]
    rows = [
        (
            f"{jobs:,}",
            metronome.fmt("jobs/s", 1, 0),
            raw.fmt("jobs/s", 1, 0),
            f"{100 * share:.0f} %",
            f"≥ {100 * TARGET:.0f} %",
            verdict(share >= TARGET),
        )
    ]
    body = "\n\n".join(
        [
            "## 4. Worker overhead",
            f"Machine: {info}.",
            f"`bench/run.sh worker_overhead` - {options.repeat} runs each, median (min-max), "
            "sides alternating. One in-process worker (concurrency 1, `listen_notify` off, "
            f"`CONN_MAX_AGE={conn_max_age}`) drains the queue; throughput = jobs / (last job "
            "succeeded - first job started), from procrastinate's events. Metronome: a "
            "no-op integration task deferred by a tick (TaskRun tracking and all); raw: a "
            "bare `@app.task` no-op.",
            table(
                (
                    "jobs",
                    "Metronome Task",
                    "bare procrastinate task",
                    "Metronome / raw",
                    "target",
                    "",
                ),
                rows,
            ),
        ]
    )
    publish(options, "worker_overhead", body)


if __name__ == "__main__":
    main()
