"""The one owner of TaskRun writes: every change to a TaskRun row is made here.

A TaskRun is the lasting record of one run of a Task; it outlives the procrastinate job
that executes it. Its writers, all in this module:

- :func:`defer_runs` inserts the runs a tick or "run now" decided, with their jobs, in the
  caller's transaction;
- the database trigger ``metronome_sync_task_run`` (``scheduler/sql/taskrun_status_trigger.sql``,
  installed by :func:`install_trigger`) follows each job's status: started, finished,
  failed, cancelled, back to todo for a retry, in the transaction that changed the job;
- :func:`record_failure` adds what only Python knows about a failed attempt (the masked
  error, whether it is retried), from the worker's middleware; :func:`mark_stalled` does
  the same for an attempt whose worker died, from the maintenance job;
- :func:`settle_stale_runs` brings in step the runs whose job ended without the trigger
  seeing it (the job was purged or deleted): it is the write step that follows
  :func:`active_runs`, which only reads.

:func:`trigger_problems` compares the installed trigger with the file (system check
``scheduler.E001``); :func:`sync_trigger` reinstalls it when they differ, after every
``manage.py migrate``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from scheduler import fairness, jobs, sql
from scheduler.models import TaskRun
from scheduler.planner import RunToDefer

# ----------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class ActiveRuns:
    """Runs still ``todo`` or ``doing``, judged by their job's own status (the truth)."""

    queued: Counter[int] = field(default_factory=Counter)  # task id -> runs whose job waits
    running: Counter[int] = field(default_factory=Counter)  # task id -> runs whose job runs
    #: run id -> the status it should have: its job ended without the trigger seeing it
    #: (the job was deleted, or ended as something a TaskRun has no name for: cancelled).
    stale: Mapping[int, str] = field(default_factory=dict)


def active_runs(task_ids: Sequence[int]) -> ActiveRuns:
    """The queued and running runs of these Tasks, and the stale ones; reads only.

    A stale run counts as neither queued nor running, so a job that was cancelled or purged
    behind our back never blocks its Task; :func:`settle_stale_runs` records its end.
    """
    if not task_ids:
        return ActiveRuns()
    return active_from_rows(jobs.run_job_statuses(task_ids))


def active_from_rows(rows: Iterable[tuple[int, int, str | None]]) -> ActiveRuns:
    """:class:`ActiveRuns` from (run id, task id, its job's status or None) of runs still
    ``todo`` or ``doing``."""
    queued: Counter[int] = Counter()
    running: Counter[int] = Counter()
    stale: dict[int, str] = {}
    for run_id, task_id, job_status in rows:
        if job_status == "todo":
            queued[task_id] += 1
        elif job_status in ("doing", "aborting"):
            running[task_id] += 1
        else:
            stale[run_id] = job_status if job_status in TaskRun.Status.values else "cancelled"
    return ActiveRuns(queued, running, stale)


# ----------------------------------------------------------------------------- writes

_DEFER_RUNS_SQL = jobs.fair_defer_sql("""
    , runs AS (
        INSERT INTO scheduler_taskrun (task_id, tenant_id, scheduled_for, manual, job_id,
                                       status, attempts, attempt_log, enqueued_at, error)
        SELECT w.task_id, w.tenant_id, w.scheduled_for, w.manual, d.job_id,
               'todo', 0, '[]'::jsonb, now(), ''
          FROM wanted w JOIN deferred d USING (ord)
         ORDER BY w.ord
        RETURNING id, job_id
    )
    SELECT runs.id, (SELECT max(highest) FROM placed) FROM runs ORDER BY runs.job_id
""")


def defer_runs(runs: Sequence[RunToDefer]) -> list[int]:
    """Insert one job per run and its TaskRun, in the caller's transaction, in one statement;
    their TaskRun ids, in order. Jobs take their passes in ``scheduled_for`` order, so a
    Task's runs keep their order.

    A unique constraint on (task, scheduled_for) refuses a second run for a tick, whatever
    the caller checked before."""
    if not runs:
        return []
    order = sorted(range(len(runs)), key=lambda i: runs[i].scheduled_for)
    ordered = [runs[i] for i in order]
    rows = jobs.run_rows(ordered)
    with connection.cursor() as cursor:
        cursor.execute(_DEFER_RUNS_SQL, {"jobs": rows})
        found = cursor.fetchall()  # in job order, that is in ``ordered``'s order
    fairness.after_defer(max(highest for _, highest in found))
    run_ids = [0] * len(runs)
    for i, (run_id, _) in zip(order, found, strict=True):
        run_ids[i] = run_id
    return run_ids


_SETTLE_SQL = """
    UPDATE scheduler_taskrun AS r
       SET status = v.status
      FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, status text)
     WHERE r.id = v.id AND r.status IN ('todo', 'doing')
"""


def settle_stale_runs(stale: Mapping[int, str]) -> int:
    """Give each stale run (see :class:`ActiveRuns`) the status its job ended with; one
    UPDATE. A run that moved on meanwhile (the trigger saw its job) is left alone."""
    if not stale:
        return 0
    with connection.cursor() as cursor:
        rows = sql.json_rows({"id": run_id, "status": status} for run_id, status in stale.items())
        cursor.execute(_SETTLE_SQL, [rows])
        return cursor.rowcount


# Closes the open attempt with its outcome; the trigger then leaves the entry alone.
_FAILED_SQL = """
    UPDATE scheduler_taskrun
       SET error = %(error)s,
           attempt_log = CASE WHEN jsonb_array_length(attempt_log) = 0 THEN attempt_log
               ELSE jsonb_set(attempt_log, ARRAY[(jsonb_array_length(attempt_log) - 1)::text],
                   (attempt_log -> -1) || jsonb_build_object(
                       'finished_at', %(now)s::text, 'outcome', %(outcome)s,
                       'error', %(summary)s)) END
     WHERE job_id = %(job_id)s
"""


def record_failure(
    job_id: int | None,
    *,
    outcome: str,
    summary: str,
    error: str,
    now: dt.datetime | None = None,
) -> None:
    """Write a failed attempt's error on the TaskRun of ``job_id`` and close its open
    attempt with ``outcome`` (``failed``, ``retry`` or ``stalled``) and ``summary``.

    The texts must already be masked (see :mod:`scheduler.job_middleware`). The status itself
    follows when procrastinate fails or retries the job (the trigger). ``job_id`` is that
    of a job procrastinate fetched, so never None in practice (None would match no run).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _FAILED_SQL,
            {
                "job_id": job_id,
                "outcome": outcome,
                "summary": summary,
                "error": error,
                "now": now or timezone.now(),
            },
        )


STALLED_SUMMARY = "the worker running this attempt stopped sending heartbeats; retried"


def mark_stalled(job_id: int | None, now: dt.datetime | None = None) -> None:
    """Close the open attempt of a job whose worker died; the job is being retried."""
    record_failure(
        job_id, outcome="stalled", summary=STALLED_SUMMARY, error=STALLED_SUMMARY, now=now
    )


# ----------------------------------------------------------------------------- the trigger

TRIGGER = "metronome_sync_task_run"
TRIGGER_FILE = "taskrun_status_trigger"
TRIGGER_PATH = f"scheduler/sql/{TRIGGER_FILE}.sql"
#: The migration that installs the trigger from the file; once it is applied, the
#: installed trigger must match the file.
TRIGGER_MIGRATION = ("scheduler", "0007_taskrun_trigger_from_file")

_INSTALLED_SQL = f"""
    SELECT p.prosrc, t.tgenabled, t.tgfoid = p.oid, pg_get_triggerdef(t.oid), n.nspname
      FROM (SELECT to_regprocedure('{TRIGGER}()') AS fn,
                   to_regclass('procrastinate_jobs') AS tbl) AS x
      LEFT JOIN pg_proc p ON p.oid = x.fn
      LEFT JOIN pg_trigger t ON t.tgrelid = x.tbl AND t.tgname = '{TRIGGER}'
      LEFT JOIN pg_class c ON c.oid = x.tbl
      LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
"""


def trigger_sql() -> str:
    """The file's SQL: creates or replaces the function, then the trigger."""
    return sql.load(TRIGGER_FILE)


def _function_body(text: str) -> str:
    """The function's body as PostgreSQL stores it (``prosrc``): the ``$$``-quoted part."""
    found = re.search(r"\$\$(.*?)\$\$", text, re.DOTALL)
    if found is None:
        raise ValueError(f"{TRIGGER_PATH} has no $$-quoted function body")
    return found.group(1)


def _trigger_statement(text: str) -> str:
    found = re.search(r"CREATE\s+TRIGGER\b.*?;", text, re.DOTALL | re.IGNORECASE)
    if found is None:
        raise ValueError(f"{TRIGGER_PATH} has no CREATE TRIGGER statement")
    return found.group(0)


def _comparable(statement: str, schema: str) -> str:
    """A trigger definition without case, spacing, parentheses or schema prefix: what
    ``pg_get_triggerdef`` and the file's statement have in common."""
    text = statement.lower().replace(f"{schema.lower()}.", "")
    return re.sub(r"[\s();]", "", text)


def trigger_problems(using: str = "default") -> list[str]:
    """What differs between the installed trigger and its function and the file; empty
    when both are installed, enabled and current."""
    with connections[using].cursor() as cursor:
        cursor.execute(_INSTALLED_SQL)
        body, enabled, calls_function, definition, schema = cursor.fetchone()
    expected = trigger_sql()
    found = []
    if body is None:
        found.append(f"the function {TRIGGER}() is missing")
    elif body != _function_body(expected):
        found.append(f"the installed function {TRIGGER}() differs from {TRIGGER_PATH}")
    if enabled is None:
        found.append(f"the trigger {TRIGGER} on procrastinate_jobs is missing")
        return found
    if enabled == "D":
        found.append(f"the trigger {TRIGGER} on procrastinate_jobs is disabled")
    if body is not None and not calls_function:
        found.append(f"the trigger {TRIGGER} does not execute the function {TRIGGER}()")
    if _comparable(definition, schema) != _comparable(_trigger_statement(expected), schema):
        found.append(
            f"the trigger {TRIGGER} is defined as {definition!r}, not as in {TRIGGER_PATH}"
        )
    return found


def install_trigger(using: str = "default") -> None:
    """Create or replace the function and the trigger from the file."""
    with connections[using].cursor() as cursor:
        cursor.execute(trigger_sql())


def trigger_expected(using: str = "default") -> bool:
    """Whether the migration that installs the trigger from the file is applied."""
    applied = MigrationRecorder(connections[using]).applied_migrations()
    return TRIGGER_MIGRATION in applied


def sync_trigger(using: str = "default") -> bool:
    """Reinstall the trigger when it should be installed and is not as in the file (run
    after every ``migrate``, so that ``migrate`` repairs it); True when it did."""
    if not trigger_expected(using) or not trigger_problems(using):
        return False
    install_trigger(using)
    return True
