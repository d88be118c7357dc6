"""Every benchmark in ``bench/`` runs end to end, so that none can rot.

Tiny sizes and one repetition: the numbers are not checked against targets, only that each
script seeds, measures both sides and writes its section (the fairness test also checks that
its numbers are sane: fair before plain, the limit kept). They run as subprocesses, the way a
user runs them, on a database of their own (named after the test database, plus ``_smoke_bench``),
which is dropped at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Extra options per benchmark, on top of ``--quick --repeat 1``.
BENCHMARKS = {
    "tick_cost": [],
    "idle_tick": [],
    "worker_overhead": ["--jobs", "10"],
    "lateness": ["--tasks", "20", "--duration", "3"],
    "fairness": [],
    # Enough old runs that the purge beside the ticks leaves a few batches to time.
    "retention": ["--runs", "60000", "--due", "20"],
    # A herd of three chunks, so that the second scheduler worker has some to take.
    "herd": ["--tasks", "600", "--tenants", "20", "--chunk-size", "200"],
}
_FAIRNESS_ROW = re.compile(
    r"^\| (?P<label>[0-9][a-z]?\. [^|]*) \| (?P<fair>[^|]*) \| (?P<plain>[^|]*) \|"
)


@pytest.fixture(scope="module")
def bench_database_url() -> Iterator[str]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    name = f"{(db.get('TEST') or {}).get('NAME') or 'test_' + db['NAME']}_smoke_bench"
    credentials = f"{quote(db['USER'], safe='')}:{quote(str(db['PASSWORD']), safe='')}"
    url = f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{name}"
    yield url
    import psycopg

    for maintenance in ("postgres", "template1"):  # as bench.common.ensure_database does
        try:
            conn = psycopg.connect(url.rsplit("/", 1)[0] + f"/{maintenance}", autocommit=True)
        except psycopg.OperationalError:
            continue
        with conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        break


def run_benchmark(name: str, bench_database_url: str, tmp_path: Path) -> str:
    """Run one benchmark small; the section it wrote (checked to be there)."""
    output = tmp_path / "benchmarks.md"
    command = [sys.executable, "-m", f"bench.{name}", "--quick", "--repeat", "1"]
    command += ["--database-url", bench_database_url, "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        command + BENCHMARKS[name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = output.read_text()
    assert f"<!-- bench:{name} begin -->" in text and f"<!-- bench:{name} end -->" in text
    assert "Machine:" in text and "|---|" in text, text
    return text


@pytest.mark.parametrize("name", [name for name in BENCHMARKS if name != "fairness"])
def test_benchmark_runs_end_to_end(name: str, bench_database_url: str, tmp_path: Path) -> None:
    run_benchmark(name, bench_database_url, tmp_path)


def test_fairness_benchmark_measures_both_sides(bench_database_url: str, tmp_path: Path) -> None:
    """The fairness table has every measure, with numbers that are sane (not its targets):
    B-K wait less behind A's backlog when fair, the limit of 2 was never exceeded, and the
    two-at-a-time reference ran at most two jobs at once."""
    text = run_benchmark("fairness", bench_database_url, tmp_path)
    rows = {}
    for line in text.splitlines():
        found = _FAIRNESS_ROW.match(line)
        if found:
            rows[found["label"].split(".")[0]] = (found["fair"], found["plain"])
    assert set(rows) == {"1", "2", "3", "3b", "4a", "4b"}, text

    def numbers(key: str, side: int) -> list[float]:
        text = rows[key][side].replace(",", "")  # 1,192 is one number
        return [float(x) for x in re.findall(r"[0-9]+(?:\.[0-9]+)?", text)]

    fair_p50, fair_p99 = numbers("1", 0)
    plain_p50, plain_p99 = numbers("1", 1)
    assert 0 <= fair_p50 <= fair_p99 and 0 <= plain_p50 <= plain_p99, rows["1"]
    assert fair_p99 < plain_p99, rows["1"]
    light, heavy = numbers("2", 0)[:2]
    assert light > 0 and heavy > light, rows["2"]
    assert sum(numbers("2", 1)[:2]) > 0, rows["2"]
    peak, drain = numbers("3", 0)
    peak_plain, drain_plain = numbers("3", 1)
    assert 1 <= peak <= 2 and drain > 0, rows["3"]
    assert peak_plain >= 1 and drain_plain > 0, rows["3"]
    peak_two, drain_two = numbers("3b", 1)  # plain procrastinate, two at a time
    assert 1 <= peak_two <= 2 and drain_two > 0, rows["3b"]
    rates = [numbers(key, side)[0] for key in ("4a", "4b") for side in (0, 1)]
    assert all(rate > 0 for rate in rates), (rows["4a"], rows["4b"])
