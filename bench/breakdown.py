"""Where a tick's time goes, phase by phase (for ``--profile``; evidence for a missed target).

cProfile slows Python code two to three times more than it slows waiting on PostgreSQL, so
its proportions mislead for a tick; wall-clock timers around each phase do not. The
wrappers are installed in this (benchmark) process only, for the duration of one call,
and never change what the tick does.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

#: (module path, attribute, label): the tick's phases (read, plan, write), then the parts of
#: defer_runs.
PHASES = (
    ("scheduler.tick_store", "lock_due_tasks", "lock_due_tasks (due Tasks locked, their runs)"),
    ("scheduler.planner", "draft", "planner.draft (next_fire, catch-up per Task)"),
    ("scheduler.planner", "plan", "planner.plan (overlap per Task)"),
    ("scheduler.run_records", "defer_runs", "defer_runs (jobs and TaskRuns, one statement)"),
    ("scheduler.jobs", "run_rows", "  of which run_rows (the JSON document)"),
    ("scheduler.run_records", "settle_stale_runs", "settle_stale_runs"),
    ("scheduler.tick_store", "advance_tasks", "advance_tasks (UPDATE … FROM jsonb)"),
    ("scheduler.tick_store", "record_tick", "record_tick"),
)


def _resolve(path: str) -> Any:
    import importlib

    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _timer(func: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    return timed


@contextlib.contextmanager
def _timed(spent: dict[str, float]) -> Iterator[None]:
    originals = []
    for path, attr, label in PHASES:
        owner = _resolve(path)
        original = getattr(owner, attr)
        originals.append((owner, attr, original))
        setattr(owner, attr, _timer(original, label, spent))
    try:
        yield
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)


def tick_phases(func: Callable[[], object]) -> dict[str, float]:
    """Seconds spent in each phase during ``func()`` (a tick); the rest is the commit."""
    spent: dict[str, float] = {}
    start = time.perf_counter()
    with _timed(spent):
        func()
    total = time.perf_counter() - start
    top = sum(v for k, v in spent.items() if not k.startswith(" "))
    spent["rest: code lookups, transaction commit (deferred FK checks), logging"] = total - top
    spent["total"] = total
    return spent


def report(label: str, spent: dict[str, float]) -> str:
    total = spent["total"]
    lines = [f"--- phases: {label} ---"]
    lines += [f"{v * 1000:10.1f} ms {100 * v / total:5.1f}%  {k}" for k, v in spent.items()]
    text = "\n".join(lines)
    print(text)
    return text
