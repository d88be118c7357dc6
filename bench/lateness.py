"""Benchmark 3: how late jobs are enqueued and started, against procrastinate's own periodic.

Everything here runs for real: ``manage.py procrastinate worker`` subprocesses on the bench
database with ``SCHEDULER_PERIOD=1``, and procrastinate's periodic ``scheduler`` job (an
every-second procrastinate periodic task) is the baseline measured in the same run.

a. Enqueue lateness: 1,000 Tasks (100 tenants) due at the same tick, every 5 s, no tenant
   worker. A job is enqueued when its row is committed, i.e. when PostgreSQL delivers its
   ``job_inserted`` notification, which this process LISTENs to.
b. Start lateness: a lone every-second Task and a lone every-minute Task, each with an idle
   worker of its own; a ``github.get_users`` run against a local HTTP server answering ``[]``.
   Metronome: ``TaskRun.started_at - scheduled_for``; procrastinate: the ``scheduler`` job's
   ``started`` event - its periodic timestamp.

    bench/run.sh lateness [--quick] [--repeat 5] [--tasks 1000] [--duration 305]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import json
import math
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
    fetch,
    machine,
    parse_options,
    percentile,
    prepare,
    publish,
    table,
    verdict,
)

TARGET_ENQUEUE_P99 = 1.0
TARGET_START_P99 = 0.5
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
MANAGE_WORKER = ("manage.py", "procrastinate", "worker")
#: ``--what-if-margin``: the same worker command, with procrastinate's periodic deferrer
#: oversleeping by the given seconds instead of its 0.5 (an experiment, never the default).
_WITH_MARGIN = (
    "import sys, runpy, procrastinate.periodic as p; p.MARGIN = float(sys.argv[1]); "
    "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=None, help="Tasks due per tick in (a)")
    parser.add_argument(
        "--what-if-margin",
        type=float,
        default=None,
        help="experiment: run the workers with procrastinate.periodic.MARGIN set to this",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of (b); the every-minute Task gets one sample a minute (default 305)",
    )


# --- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Lateness:
    label: str
    samples: list[float]  # seconds

    def row(
        self, target: float | None, baseline: Lateness | None, note: str = "(baseline)"
    ) -> list[object]:
        s = self.samples
        if not s:
            return [self.label, 0, "", "", "", "", "", "", ""]
        p99 = percentile(s, 99)
        ratio = ""
        if baseline and baseline.samples:
            ratio = f"{percentile(s, 50) / percentile(baseline.samples, 50):.2f}x"
        return [
            self.label,
            len(s),
            f"{percentile(s, 50):.3f} s",
            f"{percentile(s, 95):.3f} s",
            f"{p99:.3f} s",
            f"{min(s):.3f}-{max(s):.3f} s",
            ratio,
            f"p99 ≤ {target} s" if target is not None else note,
            verdict(p99 <= target) if target is not None else "",
        ]


class CommitClock(threading.Thread):
    """When each job became visible to workers: PostgreSQL sends a job's ``job_inserted``
    notification when its transaction commits, so arrival time = commit time (same host)."""

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__(daemon=True)
        self.seen: dict[int, float] = {}
        self._stop_event = threading.Event()
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute("LISTEN procrastinate_any_queue_v1")

    def run(self) -> None:
        while not self._stop_event.is_set():
            for note in self._conn.notifies(timeout=0.2):
                arrived = time.time()
                payload = json.loads(note.payload)
                if payload.get("type") == "job_inserted":
                    self.seen.setdefault(payload["job_id"], arrived)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
        self._conn.close()


class _Members(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def members_server() -> Iterator[str]:
    """A GitHub stand-in answering every ``/orgs/<org>/members`` with no member."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Members)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def workers(url: str, queues: Sequence[str], margin: float | None = None) -> Iterator[None]:
    """One real ``manage.py procrastinate worker`` per entry of ``queues``; SIGTERM at exit."""
    launcher = [sys.executable] if margin is None else [sys.executable, "-c", _WITH_MARGIN]
    launcher += [str(margin)] if margin is not None else []
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SCHEDULER_PERIOD": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile(mode="w+")) for _ in queues]
        try:
            for i, (queue, log) in enumerate(zip(queues, logs, strict=True)):
                command = [*launcher, *MANAGE_WORKER, f"--queues={queue}", f"--name=bench-{i}"]
                procs.append(
                    subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
                )
            _wait_ready(len(queues), procs, logs)
            yield
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_ready(count: int, procs: list[subprocess.Popen], logs: list, timeout: float = 60) -> None:
    """Until every worker registered and the scheduler ran a tick."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"a worker exited ({proc.returncode}):\n{log.read()}")
        (registered,) = fetch("SELECT count(*) FROM procrastinate_workers")[0]
        (ticks,) = fetch("SELECT count(*) FROM scheduler_schedulertick")[0]
        if registered >= count and ticks:
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers not ready after {timeout} s")


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def _periodic_started(since: float, until: float) -> list[float]:
    """The ``scheduler`` job's start lateness per tick: its ``started`` event - timestamp."""
    rows = fetch(
        "SELECT extract(epoch FROM e.at) - (j.args->>'timestamp')::bigint "
        "FROM procrastinate_jobs j JOIN procrastinate_events e "
        "  ON e.job_id = j.id AND e.type = 'started' "
        "WHERE j.task_name = 'scheduler' AND (j.args->>'timestamp')::bigint BETWEEN %s AND %s",
        [math.ceil(since), math.floor(until)],
    )
    return [float(r[0]) for r in rows]


# --- (a) enqueue lateness ---------------------------------------------------------------


def enqueue_lateness(
    url: str, tasks: int, ticks: int, interval: int, margin: float | None
) -> tuple[Lateness, Lateness, Lateness]:
    """``tasks`` Tasks due together every ``interval`` seconds, for ``ticks`` ticks."""
    seed.wipe()
    fleet = seed.make_fleet(min(100, tasks))
    cron = f"* * * * * */{interval}"
    seed.insert_tasks(fleet, tasks, due_at=FAR, crons=(cron,), overlap="allow")
    seed.vacuum("scheduler_task")
    clock = CommitClock(url)
    clock.start()
    try:
        with workers(url, ["scheduler"], margin):
            first = interval * math.ceil((time.time() + 1.5) / interval)
            seed.make_due(None, dt.datetime.fromtimestamp(first, dt.UTC))
            last = first + interval * (ticks - 1)
            deadline = last + 30
            while time.time() < deadline:
                (runs,) = fetch("SELECT count(*) FROM scheduler_taskrun")[0]
                if runs >= tasks * ticks and time.time() > last + 1:
                    break
                time.sleep(0.25)
        time.sleep(0.5)  # the last notifications
    finally:
        clock.stop()
    rows = fetch(
        "SELECT job_id, extract(epoch FROM scheduled_for) FROM scheduler_taskrun "
        "WHERE scheduled_for <= to_timestamp(%s)",
        [last],
    )
    missing = [job for job, _ in rows if job not in clock.seen]
    if missing or len(rows) < tasks * ticks:
        raise RuntimeError(f"{len(rows)} runs for {tasks * ticks}, {len(missing)} not seen")
    metronome = [clock.seen[job] - float(when) for job, when in rows]
    periodic_ids = fetch(
        "SELECT id, (args->>'timestamp')::bigint FROM procrastinate_jobs "
        "WHERE task_name = 'scheduler' AND (args->>'timestamp')::bigint BETWEEN %s AND %s",
        [first, last],
    )
    periodic = [clock.seen[job] - stamp for job, stamp in periodic_ids if job in clock.seen]
    ticks_rows = fetch(
        "SELECT extract(epoch FROM finished_at - started_at) FROM scheduler_schedulertick "
        "WHERE deferred > 0"
    )
    return (
        Lateness(f"Metronome: {tasks:,} Tasks due at one tick, job committed", metronome),
        Lateness("procrastinate periodic job (`scheduler`), job committed", periodic),
        Lateness(f"(the tick itself, {tasks:,} due: duration)", [float(r[0]) for r in ticks_rows]),
    )


# --- (b) start lateness -----------------------------------------------------------------


def start_lateness(
    url: str, duration: float, margin: float | None
) -> tuple[Lateness, Lateness, Lateness, Lateness]:
    from scheduler.models import Task
    from tenants.models import Locker

    seed.wipe()
    with members_server() as base_url:
        # The stand-in is a local server: let the bench workers (subprocesses) reach it.
        os.environ["INTEGRATION_ALLOWED_HOSTS"] = base_url.split("//", 1)[1]
        fleet = seed.make_fleet(2, config={"org": "bench", "base_url": base_url}, prefix="late")
        for tenant_id in fleet.tenant_ids:
            Locker.add("github_token", "bench-token", tenant_id)
        every_second, every_minute = Task.objects.bulk_create(
            Task(
                integration_id=integration_id,
                tenant_id=tenant_id,
                name="get_users",
                cron=cron,
                overlap="allow",
                next_run_at=FAR,
            )
            for integration_id, tenant_id, cron in zip(
                fleet.integration_ids, fleet.tenant_ids, ("* * * * * *", "* * * * *"), strict=True
            )
        )
        with workers(url, ["scheduler", *fleet.queues], margin):
            start = math.ceil(time.time()) + 2
            start_at = dt.datetime.fromtimestamp(start, dt.UTC)
            minute = dt.datetime.fromtimestamp(60 * math.ceil(start / 60), dt.UTC)
            Task.objects.filter(pk=every_second.pk).update(next_run_at=start_at)
            Task.objects.filter(pk=every_minute.pk).update(next_run_at=minute)
            end = start + duration
            _sleep_until(end + 2)
    failed = fetch("SELECT error FROM scheduler_taskrun WHERE status = 'failed' LIMIT 1")
    if failed:
        raise RuntimeError(f"a bench run failed: {failed[0][0]}")

    def runs(task: Task) -> list[float]:
        rows = fetch(
            "SELECT extract(epoch FROM started_at - scheduled_for) FROM scheduler_taskrun "
            "WHERE task_id = %s AND started_at IS NOT NULL AND scheduled_for <= to_timestamp(%s)",
            [task.pk, end],
        )
        return [float(r[0]) for r in rows]

    by_event = fetch(
        "SELECT extract(epoch FROM e.at - r.scheduled_for) FROM scheduler_taskrun r "
        "JOIN procrastinate_events e ON e.job_id = r.job_id AND e.type = 'started' "
        "WHERE r.task_id = %s AND r.scheduled_for <= to_timestamp(%s)",
        [every_second.pk, end],
    )
    return (
        Lateness(
            "procrastinate's own every-second periodic task (`scheduler` job)",
            _periodic_started(start, end),
        ),
        Lateness("Metronome every-second Task (`* * * * * *`)", runs(every_second)),
        Lateness("Metronome every-minute Task (`* * * * *`)", runs(every_minute)),
        Lateness(
            "(same every-second Task, by its job's `started` event)",
            [float(r[0]) for r in by_event],
        ),
    )


# --- report -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    url = prepare(options, env={"SCHEDULER_PERIOD": "1"})
    info = machine()
    extra = options.extra
    tasks = extra.tasks or (50 if options.quick else 1_000)
    duration = extra.duration or (5.0 if options.quick else 305.0)
    what_if = ""
    if extra.what_if_margin is not None:
        what_if = (
            f" **Experiment: workers ran with `procrastinate.periodic.MARGIN = "
            f"{extra.what_if_margin}` (default 0.5), not as shipped.**"
        )
    headers = ("", "n", "p50", "p95", "p99", "min-max", "vs procrastinate p50", "target", "")

    interval = 2 if options.quick else 5
    a_metronome, a_periodic, a_tick = enqueue_lateness(
        url, tasks, options.repeat, interval, extra.what_if_margin
    )
    rows_a = [
        a_metronome.row(TARGET_ENQUEUE_P99, a_periodic),
        a_periodic.row(None, None),
        a_tick.row(None, None, "(for reference)"),
    ]
    print(table(headers, rows_a), file=sys.stderr)
    b_periodic, b_second, b_minute, b_event = start_lateness(url, duration, extra.what_if_margin)
    rows_b = [
        b_periodic.row(None, None),
        b_second.row(TARGET_START_P99, b_periodic),
        b_minute.row(TARGET_START_P99, b_periodic),
        b_event.row(None, b_periodic, "(for reference)"),
    ]
    body = "\n\n".join(
        [
            "## 3. Lateness",
            f"Machine: {info}.",
            "`bench/run.sh lateness` - real `manage.py procrastinate worker` processes with "
            "`SCHEDULER_PERIOD=1` on the bench database; lateness = when - intended time."
            + what_if,
            f"### 3a. Enqueue lateness ({tasks:,} Tasks due together, {options.repeat} ticks "
            f"{interval} s apart, no tenant worker)",
            "Committed = when this process received the job's `job_inserted` notification "
            "(PostgreSQL delivers it at commit). The procrastinate row is the periodic "
            "`scheduler` job of the same ticks, deferred by procrastinate's periodic deferrer.",
            table(headers, rows_a),
            f"### 3b. Start lateness ({duration:.0f} s, one idle worker per tenant)",
            "Metronome: `TaskRun.started_at - scheduled_for` of `github.get_users` against a "
            "local server answering `[]`. procrastinate: the every-second `scheduler` job's "
            "`started` event - its periodic timestamp, same workers, same run. The every-minute "
            "Task has one sample per minute of the run.",
            table(headers, rows_b),
        ]
    )
    publish(options, "lateness", body)


if __name__ == "__main__":
    main()
