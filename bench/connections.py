"""Benchmark 5: PostgreSQL connections per process (workers, scheduler, web), measured.

Starts real processes - ``manage.py procrastinate worker`` at ``--concurrency`` 1, 4 and 8,
a scheduler worker (``--queues=scheduler``) and gunicorn - against the bench database,
each with a distinct ``application_name`` in its ``DATABASE_URL`` (Django passes the URL's
query to psycopg, and procrastinate's worker pool is built from Django's connection
parameters, so every connection of a process carries its name). ``pg_stat_activity`` is
then read while the process is idle, while it runs sync jobs, and after them.

The jobs are real Metronome runs: Tasks of a no-op integration type (``benchconn``, which
sleeps ``--job-ms`` and runs one query on Django's connection) are made due and turned
into jobs by a tick, on the queues of 1 tenant and of ``--tenants`` tenants (1,000 by
default), so the table shows whether the count depends on the number of tenants.

The worker runs as ``python -m bench.connections _worker ARGS`` which registers the no-op
type and then runs ``manage.py procrastinate worker ARGS`` in the same process (the type
exists in the bench only, the way ``tests/conftest.py`` registers its ``probe`` type).

    bench/run.sh connections [--quick] [--tenants 1000] [--jobs 400] [--job-ms 20]

Full runs replace the measured section of docs/scaling.md (not docs/benchmarks.md: the
numbers sit next to the connection budget they justify).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import seed
from bench.common import (
    DOCS,
    NOW,
    ROOT,
    execute,
    fetch,
    machine,
    parse_options,
    prepare,
    publish,
    table,
)

SCALING = ROOT / "docs" / "scaling.md"
NOOP_TYPE = "benchconn"
CONCURRENCIES = (1, 2, 4, 8)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenants", type=int, default=None, help="tenants (default 1000)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 400)")
    parser.add_argument("--job-ms", type=int, default=20, help="milliseconds each job sleeps")


def register_noop_type(job_ms: int) -> None:
    """A no-op integration type: sleeps, then one query on Django's per-thread connection."""
    from django.db import connection

    from integrations.base.registry import IntegrationType, register
    from integrations.base.tasks import RunContext, integration_task

    class BenchConn(IntegrationType):
        name = NOOP_TYPE

    register(BenchConn)

    @integration_task(BenchConn)
    def noop(run: RunContext) -> None:
        time.sleep(job_ms / 1000)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")


def worker_main(argv: list[str]) -> None:
    """``_worker [--job-ms N] ARGS``: the no-op type, then ``manage.py procrastinate worker``."""
    job_ms = 20
    if argv[:1] == ["--job-ms"]:
        job_ms, argv = int(argv[1]), argv[2:]
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    register_noop_type(job_ms)
    log = os.environ.get("BENCH_CONNECTION_LOG")
    if log:
        log_django_connections(log)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", "procrastinate", "worker", *argv])


def log_django_connections(path: str) -> None:
    """Append ``backend pid<TAB>opener`` to ``path`` for each connection Django opens in this
    process: which of the process's connections are Django's, and which code opened them
    (the rest are procrastinate's pool and its LISTEN connection)."""
    import threading
    import traceback

    from django.db.backends.base.base import BaseDatabaseWrapper

    original = BaseDatabaseWrapper.connect

    def connect(self: BaseDatabaseWrapper) -> None:
        original(self)
        frames = traceback.extract_stack()[:-1]
        opener = next(
            (
                f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.name}"
                for f in reversed(frames)
                if str(ROOT) in f.filename and "/.venv/" not in f.filename
            ),
            "django",
        )
        thread = "main" if threading.current_thread() is threading.main_thread() else "pool"
        with open(path, "a") as out:
            out.write(f"{self.connection.info.backend_pid}\t{thread} thread, {opener}\n")

    BaseDatabaseWrapper.connect = connect  # type: ignore[method-assign]


# --- counting -------------------------------------------------------------------------


@dataclass
class Count:
    """Connections of one ``application_name``: all, the LISTEN one(s), the busiest moment."""

    total: int = 0
    listen: int = 0
    peak: int = 0
    samples: list[int] = field(default_factory=list)


def count(name: str) -> tuple[int, int]:
    """(connections, of which LISTEN) of the processes named ``name`` right now."""
    ((total, listen),) = fetch(
        "SELECT count(*), count(*) FILTER (WHERE query ILIKE 'LISTEN %%') "
        "FROM pg_stat_activity WHERE application_name = %s",
        [name],
    )
    return total, listen


def breakdown(name: str, log: Path | None) -> dict[str, int]:
    """What each connection of ``name`` is: procrastinate's LISTEN connection, a Django
    connection (and the code that opened it, from the process's log), or procrastinate's
    worker pool (all the others)."""
    django = {}
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            pid, opener = line.split("\t", 1)
            django[int(pid)] = opener
    kinds: dict[str, int] = {}
    for pid, query in fetch(
        "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s", [name]
    ):
        statement = " ".join((query or "").split()).upper()
        if pid in django:
            kind = f"Django ({django[pid]})"
        elif statement.startswith("LISTEN") or statement == "SELECT 1":
            kind = "LISTEN"  # the listener runs "SELECT 1" after 30 s without a notification
        else:
            kind = "procrastinate pool"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def fmt_breakdown(kinds: dict[str, int]) -> str:
    return "; ".join(f"{n} {kind}" for kind, n in kinds.items())


def named_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"application_name={name}") if q)
    return urlunsplit(parts._replace(query=query))


def wait_for(name: str, minimum: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while count(name)[0] < minimum:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: fewer than {minimum} connections after {timeout} s")
        time.sleep(0.2)


def settle(name: str, seconds: float = 3.0) -> tuple[int, int]:
    """The count once it has not changed for ``seconds`` (start-up is over)."""
    last, since = count(name), time.monotonic()
    deadline = since + 30
    while time.monotonic() - since < seconds and time.monotonic() < deadline:
        time.sleep(0.25)
        now = count(name)
        if now != last:
            last, since = now, time.monotonic()
    return last


# --- processes ------------------------------------------------------------------------


def start(args: list[str], url: str, name: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": named_url(url, name),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if log is not None:
        log.unlink(missing_ok=True)
        env["BENCH_CONNECTION_LOG"] = str(log)
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log is None else None,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_command(concurrency: int, job_ms: int) -> list[str]:
    args = [sys.executable, "-m", "bench.connections", "_worker", "--job-ms", str(job_ms)]
    return [*args, f"--concurrency={concurrency}"]


def defer_runs(tenants: int, jobs: int) -> int:
    """Make due ``jobs`` Tasks of the first tenant (``tenants == 1``) or one Task of each of
    ``tenants`` tenants, and let one tick defer them; returns the jobs deferred."""
    from scheduler.tick import run_tick

    seed.clear_runs()
    execute("UPDATE scheduler_task SET next_run_at = NULL, last_run_at = NULL")
    if tenants == 1:
        chosen = (
            "SELECT id FROM scheduler_task WHERE tenant_id = "
            "(SELECT min(id) FROM tenants_tenant) ORDER BY id LIMIT %s"
        )
        execute(f"UPDATE scheduler_task SET next_run_at = %s WHERE id IN ({chosen})", [NOW, jobs])
    else:
        chosen = "SELECT DISTINCT ON (tenant_id) id FROM scheduler_task ORDER BY tenant_id, id"
        execute(f"UPDATE scheduler_task SET next_run_at = %s WHERE id IN ({chosen})", [NOW])
    return len(run_tick(NOW).deferred)


def pending() -> int:
    return fetch("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")[0][0]


def busy(name: str, timeout: float = 300.0) -> Count:
    """Sample while jobs remain; the peak is the most connections seen at once."""
    result = Count()
    deadline = time.monotonic() + timeout
    while pending() and time.monotonic() < deadline:
        total, listen = count(name)
        result.samples.append(total)
        result.peak = max(result.peak, total)
        result.listen = max(result.listen, listen)
        time.sleep(0.05)
    if pending():
        raise RuntimeError(f"{name}: jobs still pending after {timeout} s")
    return result


@dataclass(frozen=True)
class WorkerRow:
    concurrency: int
    idle: dict[str, int]
    busy_one: int
    busy_many: int
    after: dict[str, int]


def log_path(name: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{name}-{os.getpid()}.connections"


def measure_worker(url: str, concurrency: int, tenants: int, jobs: int, job_ms: int) -> WorkerRow:
    """Idle, busy with ``jobs`` jobs of one tenant, then ``tenants`` jobs of one tenant each."""
    name = f"bench-worker-c{concurrency}"
    log = log_path(name)
    proc = start(worker_command(concurrency, job_ms), url, name, log)
    try:
        wait_for(name, 1)
        settle(name)
        idle = breakdown(name, log)
        peaks = []
        for spread, expected in ((1, jobs), (tenants, tenants)):
            deferred = defer_runs(spread, jobs)
            if deferred != expected:
                raise RuntimeError(f"the tick deferred {deferred} runs, expected {expected}")
            queues = fetch("SELECT count(DISTINCT queue_name) FROM procrastinate_jobs")[0][0]
            if queues != spread:
                raise RuntimeError(f"the jobs are on {queues} queues, expected {spread}")
            peaks.append(busy(name).peak)
            (succeeded,) = fetch(
                "SELECT count(*) FROM procrastinate_jobs "
                "WHERE status = 'succeeded' AND queue_name <> 'scheduler'"
            )[0]
            if succeeded != expected:
                raise RuntimeError(f"{succeeded} of {expected} jobs succeeded")
        settle(name)
        return WorkerRow(concurrency, idle, peaks[0], peaks[1], breakdown(name, log))
    finally:
        stop(proc)
        log.unlink(missing_ok=True)


def measure_idle(url: str, name: str, options: list[str]) -> dict[str, int]:
    """A worker started with ``options``, idle (its periodic jobs run meanwhile)."""
    log = log_path(name)
    proc = start(worker_command(1, 0) + options, url, name, log)
    try:
        wait_for(name, 1)
        settle(name)
        return breakdown(name, log)
    finally:
        stop(proc)
        log.unlink(missing_ok=True)


def measure_web(url: str, workers: int, threads: int, requests: int) -> tuple[int, int]:
    """gunicorn with ``workers`` x ``threads``: connections after ``requests`` concurrent
    ``/healthz`` requests (each opens Django's connection in its thread)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"bench-web-w{workers}t{threads}"
    gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
    args = [gunicorn, "config.wsgi", f"--workers={workers}", f"--threads={threads}"]
    args += [f"--bind=127.0.0.1:{port}", "--log-level=warning"]
    proc = start(args, url, name)
    try:
        deadline = time.monotonic() + 30

        def get(_: int) -> None:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read()
                    return
                except urllib.error.HTTPError:
                    return  # 503 (no scheduler heartbeat) still used the database
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        with ThreadPoolExecutor(max_workers=workers * threads * 2) as pool:
            list(pool.map(get, range(requests)))
        before = count(name)[0]
        return before, settle(name, 2.0)[0]
    finally:
        stop(proc)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        worker_main(argv[1:])
        return
    options = parse_options(__doc__.splitlines()[0], argv, _arguments)
    if options.output == DOCS:  # the numbers belong next to the budget they justify
        options = dataclasses.replace(options, output=SCALING)
    url = prepare(options)
    info = machine()
    from django.conf import settings

    extra = options.extra
    tenants = extra.tenants or (20 if options.quick else 1_000)
    jobs = extra.jobs or (40 if options.quick else 400)
    concurrencies = (1, 4) if options.quick else CONCURRENCIES
    register_noop_type(extra.job_ms)
    seed.wipe()
    fleet = seed.make_fleet(tenants, integration=NOOP_TYPE, prefix="conn")
    # One Task per tenant (the 1-tenant-per-job run), and `jobs` more on the first tenant.
    seed.insert_tasks(fleet, tenants, due_at=None, name="noop", overlap="allow")
    first = seed.Fleet(fleet.tenant_ids[:1], fleet.integration_ids[:1])
    seed.insert_tasks(first, jobs, due_at=None, name="noop", overlap="allow", offset=tenants)
    rows = []
    for concurrency in concurrencies:
        row = measure_worker(url, concurrency, tenants, jobs, extra.job_ms)
        print(row, file=sys.stderr)
        rows.append(row)
    idle_only = {
        "worker `--queues=scheduler`, idle": measure_idle(
            url, "bench-scheduler", ["--queues=scheduler"]
        ),
        "worker `--queues=1,2,…` (every tenant's queue), idle": measure_idle(
            url, "bench-many-queues", ["--queues=" + ",".join(fleet.queues)]
        ),
        "worker `--no-listen-notify --fetch-job-polling-interval=1`, idle": measure_idle(
            url,
            "bench-polling",
            ["--no-listen-notify", "--fetch-job-polling-interval=1"],
        ),
    }
    print(idle_only, file=sys.stderr)
    web = [(w, t, *measure_web(url, w, t, 40)) for w, t in ((2, 1), (1, 4))]
    conn_max_age = settings.DATABASES["default"]["CONN_MAX_AGE"]
    cpu = os.cpu_count() or 1
    worker_table = table(
        (
            "`--concurrency`",
            "idle",
            f"running {jobs} jobs of 1 tenant (peak)",
            f"running {tenants:,} jobs, one per tenant queue (peak)",
            "after the jobs",
        ),
        [
            (
                r.concurrency,
                sum(r.idle.values()),
                r.busy_one,
                r.busy_many,
                sum(r.after.values()),
            )
            for r in rows
        ],
    )
    kinds_table = table(
        ("process", "connections: what they are"),
        [
            (f"worker `--concurrency={r.concurrency}`, {when}", fmt_breakdown(kinds))
            for r in rows
            for when, kinds in (("idle", r.idle), ("after the jobs", r.after))
        ]
        + [(label, fmt_breakdown(kinds)) for label, kinds in idle_only.items()],
    )
    web_table = table(
        ("gunicorn", "after 40 concurrent `/healthz`", "2 s later"),
        [(f"`--workers={w} --threads={t}`", now, later) for w, t, now, later in web],
    )
    body = "\n\n".join(
        [
            "## Measured: connections per process",
            f"Machine: {info}.",
            "`bench/run.sh connections` - real processes against the bench database, each "
            "with its own `application_name`, counted in `pg_stat_activity`. Jobs: no-op "
            f"Metronome Tasks ({extra.job_ms} ms sleep + one query) deferred by a tick. "
            f"`CONN_MAX_AGE={conn_max_age}`; sync jobs run in the event loop's default thread "
            f"pool, {min(32, cpu + 4)} threads on this {cpu}-core machine.",
            worker_table,
            "Which connection is which (LISTEN: last statement procrastinate's `LISTEN`; "
            "Django: opened by Django in the worker, with the code that opened it; "
            "procrastinate pool: the worker's psycopg pool):",
            kinds_table,
            web_table,
        ]
    )
    publish(options, "connections", body)


if __name__ == "__main__":
    main()
