"""Every benchmark in ``bench/`` runs end to end, so that none can rot.

Tiny sizes and one repetition: the numbers are not checked, only that each script seeds,
measures both sides and writes its section. They run as subprocesses, the way a user runs
them, on a database of their own (named after the test database, plus ``_smoke_bench``),
which is dropped at the end.
"""

from __future__ import annotations

import os
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
}


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


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_end_to_end(name: str, bench_database_url: str, tmp_path: Path) -> None:
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
