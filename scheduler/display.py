"""How admin pages write values for people: durations, attempts and errors at a glance."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.dateparse import parse_datetime

from scheduler.models import TaskRun


def format_duration(td: dt.timedelta | None) -> str:
    """A duration as an operator reads it: ``67 ms``, ``1.2 s``, ``3 min 5 s``, ``2 h 4 min``.

    Below a second, whole milliseconds; below a minute, seconds with one decimal (``12.0 s``
    becomes ``12 s``); below an hour, minutes and whole seconds; beyond, hours and minutes,
    then days and hours. None (a run that has not finished) reads ``—``. A negative span
    (clocks of two machines disagreeing) keeps its sign.
    """
    if td is None:
        return "—"
    if td < dt.timedelta(0):
        return f"-{format_duration(-td)}"
    micros = td // dt.timedelta(microseconds=1)
    if micros < 1_000_000:
        millis = round(micros / 1000)
        if millis < 1000:
            return f"{millis} ms" if micros == 0 or millis else "<1 ms"
        micros = 1_000_000
    if micros < 60_000_000:
        tenths = round(micros / 100_000)
        if tenths < 600:
            whole, tenth = divmod(tenths, 10)
            return f"{whole} s" if tenth == 0 else f"{whole}.{tenth} s"
        micros = 60_000_000
    seconds = round(micros / 1_000_000)
    if seconds < 3600:
        minutes, secs = divmod(seconds, 60)
        return f"{minutes} min" if secs == 0 else f"{minutes} min {secs} s"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        hours, mins = divmod(minutes, 60)
        return f"{hours} h" if mins == 0 else f"{hours} h {mins} min"
    hours = round(minutes / 60)
    days, hrs = divmod(hours, 24)
    return f"{days} d" if hrs == 0 else f"{days} d {hrs} h"


def ago(when: dt.datetime | None, now: dt.datetime) -> str:
    """How long before ``now`` ``when`` was, for a narrow column: ``3 min 5 s ago``.

    A time after ``now`` (another machine's clock a little ahead) reads ``just now``.
    """
    if when is None:
        return "—"
    if when >= now:
        return "just now"
    return f"{format_duration(now - when)} ago"


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run, read from its ``attempt_log`` entry for display.

    ``outcome`` is ``doing`` while the attempt runs, else what closed it (``succeeded``,
    ``failed``, ``retry``, ``stalled``, ``cancelled``). ``next_at`` is when the following
    attempt started (``next_pending`` False) or, for the last attempt of a run waiting for
    its retry, when that retry is due (``next_pending`` True); None when nothing followed.
    """

    number: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    outcome: str
    error: str
    next_at: dt.datetime | None = None
    next_pending: bool = False

    @property
    def duration(self) -> dt.timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def duration_text(self) -> str:
        return format_duration(self.duration)

    @property
    def error_summary(self) -> str:
        return first_line(self.error)


def first_line(text: str, limit: int = 160) -> str:
    """The first non-blank line of ``text``, cut to ``limit`` characters with an ellipsis."""
    line = next((line.strip() for line in (text or "").splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _when(value: Any) -> dt.datetime | None:
    """A timestamp of the attempt log (PostgreSQL's text form of a timestamptz), or None."""
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def attempts_of(run: TaskRun, retry_due: dt.datetime | None = None) -> list[Attempt]:
    """The attempts of ``run``, first to last, numbered 1, 2, … in the order they ran.

    ``retry_due`` is the scheduled time of the run's job (procrastinate's ``scheduled_at``):
    when the run waits for a retry (``todo`` after an attempt), it is when the next attempt
    is due. Entries that are not objects are skipped, missing fields read as unknown, so a
    hand-edited or older log never breaks the page.
    """
    entries = [e for e in (run.attempt_log or []) if isinstance(e, dict)]
    attempts = []
    for index, entry in enumerate(entries):
        following = entries[index + 1] if index + 1 < len(entries) else None
        next_at = _when(following.get("started_at")) if following else None
        outcome = str(entry.get("outcome") or "")
        pending = False
        if following is None and outcome and run.status == TaskRun.Status.TODO:
            next_at, pending = retry_due, True
        attempts.append(
            Attempt(
                number=index + 1,
                started_at=_when(entry.get("started_at")),
                finished_at=_when(entry.get("finished_at")),
                outcome=outcome or ("doing" if following is None else "unknown"),
                error=str(entry.get("error") or ""),
                next_at=next_at,
                next_pending=pending,
            )
        )
    return attempts


#: Characters of an error the history shows before its full text is unfolded.
SUMMARY_LENGTH = 90


def last_error(run: TaskRun, attempts: list[Attempt]) -> tuple[str, str]:
    """What the history's Error column shows: (summary, full text).

    The run's own error when it has one (a failed or retrying run: its full text holds the
    traceback); else the error of its latest attempt that had one, so a run that succeeded
    after a retry still says why it was retried.
    """
    if run.error:
        return first_line(run.error, SUMMARY_LENGTH), run.error
    for attempt in reversed(attempts):
        if attempt.error:
            text = f"attempt {attempt.number}: {attempt.error}"
            return first_line(text, SUMMARY_LENGTH), text
    return "", ""


#: Outcomes after which the run was (or will be) tried again.
RETRIED_OUTCOMES = frozenset({"retry", "stalled"})


@dataclass(frozen=True)
class HistoryRow:
    """A run of the task page's history: the run, its attempts and the error to show."""

    run: TaskRun
    attempts: list[Attempt]
    error_summary: str
    error_text: str

    @property
    def duration_text(self) -> str:
        return format_duration(self.run.duration)

    @property
    def show_attempts(self) -> bool:
        """Whether the attempts add to the run's own row: more than one, or one retried."""
        return len(self.attempts) > 1 or any(
            a.outcome in RETRIED_OUTCOMES or a.next_pending for a in self.attempts
        )


def history_rows(
    runs: Iterable[TaskRun], retry_due: Mapping[int, dt.datetime] | None = None
) -> list[HistoryRow]:
    """The task page's history; ``retry_due`` maps a job id to its ``scheduled_at``."""
    rows = []
    for run in runs:
        due = (retry_due or {}).get(run.job_id) if run.job_id is not None else None
        attempts = attempts_of(run, due)
        summary, text = last_error(run, attempts)
        rows.append(HistoryRow(run, attempts, summary, text))
    return rows
