"""What every benchmark shares: its own database, the options, statistics and the report.

Benchmarks wipe and reseed every Metronome and procrastinate table, so they run on a
database of their own (``metronome_bench`` in the embedded cluster unless told otherwise)
and refuse any database whose name lacks ``bench``: the development data is never touched.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BENCH_DB = "metronome_bench"
#: The tick every benchmark schedules for: a Monday noon (UTC), when all seeded crons fire.
NOW = dt.datetime(2030, 1, 7, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Options:
    quick: bool
    repeat: int
    database_url: str
    output: Path | None  # None: print only
    profile: bool
    extra: argparse.Namespace


def parse_options(
    description: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Options:
    """The options every benchmark accepts; ``add_arguments`` adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions per measurement (default 5)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", ""),
        help="PostgreSQL database to use and WIPE (its name must contain 'bench'; created "
        "if missing). Default: BENCH_DATABASE_URL, else metronome_bench in the embedded cluster",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"markdown file whose section is updated (default {DOCS.relative_to(ROOT)}; "
        "--quick runs write nothing unless this is given)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one Metronome run and print its top"
    )
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    output = args.output
    if output is None and not args.quick:
        output = DOCS
    if args.no_write:
        output = None
    repeat = args.repeat or (2 if args.quick else 5)
    return Options(
        quick=args.quick,
        repeat=repeat,
        database_url=args.database_url,
        output=output,
        profile=args.profile,
        extra=args,
    )


# --- the database ---------------------------------------------------------------------


def embedded_bench_url() -> str:
    """``metronome_bench`` on the embedded cluster (started if it is not running)."""
    import localdb

    return with_database(localdb.start(), BENCH_DB)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def check_disposable(url: str) -> None:
    name = database_name(url)
    if "bench" not in name:
        raise SystemExit(
            f"bench: refusing to use database {name!r}: benchmarks wipe every table, so the "
            "database name must contain 'bench' (e.g. metronome_bench)."
        )


def ensure_database(url: str) -> None:
    """Create the database when missing, through the server's maintenance database."""
    import psycopg

    name = database_name(url)
    for maintenance in ("postgres", "template1"):
        try:
            conn = psycopg.connect(with_database(url, maintenance), autocommit=True)
        except psycopg.OperationalError:
            continue
        with conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not found:
                conn.execute(f'CREATE DATABASE "{name}"')
        return
    # No maintenance database reachable: the target itself must already exist.
    psycopg.connect(url).close()


def setup_django(url: str, *, migrate: bool = True, env: dict[str, str] | None = None) -> None:
    """Point Django at the bench database, then set it up (and migrate it).

    ``env`` sets environment-driven settings (e.g. ``SCHEDULER_PERIOD``) before Django reads
    them. Logging stays at WARNING unless the caller's environment says otherwise: a log
    line per job would measure the terminal, not the scheduler.
    """
    check_disposable(url)
    ensure_database(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.update(env or {})
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)


def prepare(options: Options, *, env: dict[str, str] | None = None) -> str:
    """Resolve, create and migrate the bench database; returns its URL."""
    url = options.database_url or embedded_bench_url()
    setup_django(url, env=env)
    return url


def execute(sql: str, params: Sequence[object] | dict[str, object] | None = None) -> int:
    """One statement on Django's connection (autocommit); returns the row count.

    Outside a transaction, a statement PostgreSQL aborts as a deadlock victim is run again
    (a few times): a bench's TRUNCATE may meet a running worker's periodic jobs."""
    import psycopg
    from django.db import OperationalError, connection

    attempts = 1 if connection.in_atomic_block else 5
    for attempt in range(1, attempts + 1):
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount
        except OperationalError as exc:
            deadlock = isinstance(exc.__cause__, psycopg.errors.DeadlockDetected)
            if attempt == attempts or not deadlock:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def fetch(sql: str, params: Sequence[object] | dict[str, object] | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


# --- the machine ----------------------------------------------------------------------


def machine() -> str:
    """One line naming what the numbers were measured on (the reader needs it)."""
    import django
    import procrastinate

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    (server,) = fetch("SHOW server_version")[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), PostgreSQL {server.split()[0]}, "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"procrastinate {procrastinate.__version__}, load average at start {load}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


# --- statistics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements (the machine is noisy: never one run)."""

    median: float
    low: float
    high: float
    n: int

    def fmt(self, unit: str = "s", scale: float = 1.0, digits: int = 3) -> str:
        m, lo, hi = (v * scale for v in (self.median, self.low, self.high))
        return f"{m:.{digits}f} {unit} ({lo:.{digits}f}-{hi:.{digits}f})"


def summarize(values: Iterable[float]) -> Summary:
    data = sorted(values)
    if not data:
        raise ValueError("no measurement to summarize")
    return Summary(statistics.median(data), data[0], data[-1], len(data))


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between the closest ranks."""
    data = sorted(values)
    if not data:
        return float("nan")
    position = (len(data) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def ratio(metronome: Summary, raw: Summary) -> str:
    return f"{metronome.median / raw.median:.2f}x" if raw.median else "n/a"


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds`` (a monotonic, high-resolution clock)."""

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


# --- the report -----------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


_HEADER = """# Benchmarks

Numbers written by the scripts in `bench/`; see the end of this file for how to run them.
Each section is replaced by the latest run of its script.
"""


def publish(options: Options, name: str, body: str) -> None:
    """Print the section, and replace it in the markdown file (others are kept)."""
    print(body)
    if options.output is None:
        return
    path = options.output
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"bench: updated section {name!r} of {path}", file=sys.stderr)


def profile(label: str, func: Callable[[], object], top: int = 25) -> str:
    """cProfile ``func`` once; print and return its top functions (cumulative, then own time)."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        func()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 2)
    text = f"--- cProfile: {label} ---\n{out.getvalue()}"
    print(text)
    return text
