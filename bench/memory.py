"""Peak resident memory, measured in a fresh process per side.

In the benchmark process itself the peak would carry whatever earlier repetitions left
behind, so :func:`measure` starts a child (``python -m bench.memory``) on the already seeded
database. Its Metronome side is a real scheduler worker: procrastinate's worker, in process,
running the ``scheduler`` job for the tick, the way ``manage.py procrastinate worker
--queues=scheduler`` does. Its raw side defers the same number of jobs in one batch.

The peak is Linux's ``VmHWM`` (reset through ``/proc/self/clear_refs`` before the
measured block); where that is unavailable, ``resource.getrusage``'s ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import NOW, ROOT, Summary, summarize


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.before`` / ``peak.peak`` in MiB."""

    before: float = 0.0
    peak: float = 0.0
    method: str = ""

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.method = "VmHWM"
        except OSError:
            self.method = "ru_maxrss"
        rss = _status_kib("VmRSS")
        self.before = (rss if rss is not None else _maxrss_kib()) / 1024
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kib("VmHWM") if self.method == "VmHWM" else None
        self.peak = (hwm if hwm is not None else _maxrss_kib()) / 1024


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@dataclass(frozen=True)
class Memory:
    before: Summary  # MiB, process at rest just before the measured block
    peak: Summary  # MiB, highest RSS during the block
    method: str

    def fmt(self) -> str:
        return (
            f"{self.peak.median:.0f} MiB ({self.peak.low:.0f}-{self.peak.high:.0f}); "
            f"+{self.peak.median - self.before.median:.0f} over rest"
        )


def measure(url: str, side: str, due: int | None, repeat: int) -> Memory:
    """Run the child for one side; ``due`` Tasks are made due (None: all of them)."""
    args = [sys.executable, "-m", "bench.memory", "--database-url", url, "--side", side]
    args += ["--repeat", str(repeat)] + (["--due", str(due)] if due is not None else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Memory(summarize(result["before"]), summarize(result["peak"]), result["method"])


def _run_scheduler_worker() -> None:
    """One ``scheduler`` job for NOW, run by a real (in-process) procrastinate worker."""
    from procrastinate.contrib.django import app

    app.tasks["scheduler"].defer(timestamp=int(NOW.timestamp()))
    periodic = app.periodic_registry.periodic_tasks
    app.periodic_registry.periodic_tasks = {}  # this worker only runs the deferred tick
    try:
        with app.replace_connector(app.connector.get_worker_connector()) as worker_app:
            worker_app.run_worker(
                queues=["scheduler"], wait=False, install_signal_handlers=False, listen_notify=False
            )
    finally:
        app.periodic_registry.periodic_tasks = periodic


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--side", choices=("metronome", "raw"), required=True)
    parser.add_argument("--due", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)

    from bench.common import fetch, setup_django

    setup_django(args.database_url, migrate=False)
    from bench import raw, seed

    fleet = raw.fleet_from_db()
    due = seed.task_count() if args.due is None else args.due
    before, peaks, method = [], [], ""
    for _ in range(args.repeat):
        seed.clear_runs()
        seed.make_due(due)
        with PeakRSS() as peak:
            if args.side == "metronome":
                _run_scheduler_worker()
            elif due:
                raw.batch_defer(fleet, due)
            else:
                raw.periodic_defer(int(NOW.timestamp()))
        if args.side == "metronome":
            (deferred,) = fetch("SELECT count(*) FROM scheduler_taskrun")[0]
            if deferred != due:
                raise RuntimeError(f"the scheduler worker deferred {deferred} runs, not {due}")
        before.append(peak.before)
        peaks.append(peak.peak)
        method = peak.method
    print(json.dumps({"before": before, "peak": peaks, "method": method}))


if __name__ == "__main__":
    _child(sys.argv[1:])
