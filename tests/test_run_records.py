"""TaskRun rows and their one writer, against real PostgreSQL.

The trigger that keeps a TaskRun in step with its job is broken the ways a database can
drift (dropped, replaced by another body, disabled, redefined) and system check
``scheduler.E001`` must say so and name the fix, which must work. Reading which runs
are active must not write; the write step that settles stale runs must leave alone a
run that moved on. Deferring inside a real worker stays atomic with the tick.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob

from scheduler import checks, run_records, tick_store
from scheduler.models import Task, TaskRun
from scheduler.planner import RunToDefer
from scheduler.tick import run_tick

UTC = dt.UTC
T0 = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)
MIN = dt.timedelta(minutes=1)


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def defer_one(task: Task, when: dt.datetime = T0) -> TaskRun:
    (run_id,) = run_records.defer_runs([RunToDefer.of(task, "probe.flaky", when)])
    return TaskRun.objects.get(pk=run_id)


def set_job_status(run: TaskRun, status: str) -> None:
    """What procrastinate does when a worker takes, finishes or retries the job."""
    sql("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, run.job_id])


def e001() -> list:
    return [m for m in checks.check_taskrun_trigger() if m.id == "scheduler.E001"]


def follows_its_job(task: Task, when: dt.datetime) -> bool:
    """Whether a run's status follows its job's, i.e. the trigger works."""
    run = defer_one(task, when)
    set_job_status(run, "doing")
    run.refresh_from_db()
    return run.status == "doing" and run.attempts == 1 and len(run.attempt_log) == 1


# ----------------------------------------------------------------------------- the trigger


@pytest.mark.django_db
def test_a_migrated_database_passes_the_check_and_runs_follow_their_jobs(probe_task):
    assert e001() == []
    assert run_records.trigger_problems() == []
    assert follows_its_job(probe_task(now=T0 - MIN), T0)


DRIFTS = {
    "dropped": (
        "DROP FUNCTION metronome_sync_task_run() CASCADE",
        ["the function metronome_sync_task_run() is missing", "the trigger", "is missing"],
    ),
    "another body": (
        "CREATE OR REPLACE FUNCTION metronome_sync_task_run() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        ["the installed function metronome_sync_task_run() differs from "
         "scheduler/sql/taskrun_status_trigger.sql"],
    ),
    "disabled": (
        "ALTER TABLE procrastinate_jobs DISABLE TRIGGER metronome_sync_task_run",
        ["the trigger metronome_sync_task_run on procrastinate_jobs is disabled"],
    ),
    "redefined": (
        "DROP TRIGGER metronome_sync_task_run ON procrastinate_jobs; "
        "CREATE TRIGGER metronome_sync_task_run AFTER UPDATE OF status ON procrastinate_jobs "
        "FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION metronome_sync_task_run()",
        ["the trigger metronome_sync_task_run is defined as", "not as in"],
    ),
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("drift", list(DRIFTS))
def test_a_drifted_trigger_is_reported_with_the_fix_and_migrate_repairs_it(probe_task, drift):
    statement, says = DRIFTS[drift]
    task = probe_task(now=T0 - MIN)
    sql(statement)
    assert not follows_its_job(task, T0)  # the harm: the run stays todo for ever

    (error,) = e001()
    for words in says:
        assert words in error.msg
    assert error.msg.startswith("TaskRun rows do not follow their jobs' status: ")
    assert "python manage.py migrate" in error.hint
    assert "scheduler/sql/taskrun_status_trigger.sql" in error.hint

    call_command("migrate", verbosity=0)  # the fix the hint names

    assert e001() == []
    assert follows_its_job(task, T0 + MIN)


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


# Outside a test transaction: some migrations build indexes concurrently, which PostgreSQL
# only does outside one. Each test leaves the database fully migrated.


@pytest.mark.django_db(transaction=True)
def test_while_a_migration_is_pending_the_check_leaves_it_to_migrate(clean_jobs, probe_task):
    """Before migrate has run, the trigger may well be missing: migrate installs it."""
    # That migration and every one after it undone, and the trigger gone.
    MigrationExecutor(connection).migrate([("scheduler", "0006_task_plan_error")])
    try:
        sql("DROP FUNCTION metronome_sync_task_run() CASCADE")
        assert run_records.trigger_problems() != []
        assert e001() == []
        assert run_records.sync_trigger() is False  # not expected yet: nothing installed
    finally:
        call_command("migrate", verbosity=0)

    assert e001() == [] and run_records.trigger_problems() == []
    assert follows_its_job(probe_task(now=T0 - MIN), T0)


@pytest.mark.django_db(transaction=True)
def test_undoing_the_file_migration_keeps_the_same_trigger(clean_jobs, probe_task):
    """0007 replaces 0004's trigger by the file's (the same SQL); undone, 0004's is back."""
    task = probe_task(now=T0 - MIN)
    executor = MigrationExecutor(connection)
    executor.migrate([("scheduler", "0006_task_plan_error")])
    try:
        assert run_records.trigger_problems() == []
        assert follows_its_job(task, T0)

        executor = MigrationExecutor(connection)
        executor.migrate([run_records.TRIGGER_MIGRATION])
        assert run_records.trigger_problems() == []
        assert follows_its_job(task, T0 + MIN)
    finally:
        migrate_to_latest()


# ----------------------------------------------------------------------------- stale runs


@pytest.mark.django_db
def test_reading_active_runs_writes_nothing_and_settling_ends_only_stale_runs(probe_task):
    task = probe_task(now=T0 - MIN, overlap="allow")
    waiting, running, purged, done_unseen, moved_on = (
        defer_one(task, T0 + i * MIN) for i in range(5)
    )
    set_job_status(running, "doing")
    set_job_status(moved_on, "doing")
    sql("DELETE FROM procrastinate_jobs WHERE id = %s", [purged.job_id])  # purged
    sql("ALTER TABLE procrastinate_jobs DISABLE TRIGGER metronome_sync_task_run")
    set_job_status(done_unseen, "doing")
    set_job_status(done_unseen, "succeeded")  # the trigger did not see it
    sql("ALTER TABLE procrastinate_jobs ENABLE TRIGGER metronome_sync_task_run")
    before = dict(TaskRun.objects.values_list("pk", "status"))

    active = run_records.active_runs([task.pk])

    assert dict(TaskRun.objects.values_list("pk", "status")) == before  # a read, no write
    assert (active.queued[task.pk], active.running[task.pk]) == (1, 2)
    assert active.stale == {purged.pk: "cancelled", done_unseen.pk: "succeeded"}

    set_job_status(moved_on, "succeeded")  # between the read and the write
    stale = {**active.stale, moved_on.pk: "cancelled"}
    assert run_records.settle_stale_runs(stale) == 2

    statuses = dict(TaskRun.objects.values_list("pk", "status"))
    assert statuses == {
        waiting.pk: "todo",
        running.pk: "doing",
        purged.pk: "cancelled",
        done_unseen.pk: "succeeded",
        moved_on.pk: "succeeded",
    }


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_job_was_purged_is_settled_by_the_tick_that_reads_it(clean_jobs, probe_task):
    task = probe_task(now=T0 - MIN, overlap="skip")
    run_tick(T0)
    first = TaskRun.objects.get()
    sql("DELETE FROM procrastinate_jobs")  # the job is purged behind our back

    assert run_records.active_runs([task.pk]).stale == {first.pk: "cancelled"}
    assert TaskRun.objects.get(pk=first.pk).status == "todo"  # reading changed nothing

    assert len(run_tick(T0 + MIN).deferred) == 1  # not blocked by the stale run
    assert TaskRun.objects.get(pk=first.pk).status == "cancelled"


# ----------------------------------------------------------------------------- failures


@pytest.mark.django_db
def test_a_stalled_attempt_is_closed_with_the_time_given(probe_task):
    run = defer_one(probe_task(now=T0 - MIN))
    set_job_status(run, "doing")
    stopped = T0 + 5 * MIN

    run_records.mark_stalled(run.job_id, now=stopped)
    set_job_status(run, "todo")  # the maintenance job retries it

    run.refresh_from_db()
    assert run.status == "todo"
    (attempt,) = run.attempt_log
    assert attempt["outcome"] == "stalled"
    assert dt.datetime.fromisoformat(attempt["finished_at"]) == stopped
    assert run.error == run_records.STALLED_SUMMARY


# ----------------------------------------------------------------------------- atomicity


def test_a_tick_that_fails_in_a_worker_leaves_no_job_and_no_run(
    run_worker, probe_task, monkeypatch
):
    """The tick runs inside a worker, whose procrastinate app talks to the database through
    its own pool; the tick's jobs go through Django's connection instead, so a failure
    after they are inserted takes them back with everything else."""
    task = probe_task(now=T0 - MIN)

    def explode(advances, now):
        raise RuntimeError("crash after the jobs and runs were inserted")

    monkeypatch.setattr(tick_store, "advance_tasks", explode)
    app.configure_task("scheduler").defer(timestamp=int(T0.timestamp()))

    run_worker(queues=["scheduler"])

    assert ProcrastinateJob.objects.get(task_name="scheduler").status == "failed"
    assert not ProcrastinateJob.objects.exclude(task_name="scheduler").exists()
    assert not TaskRun.objects.exists()
    task.refresh_from_db()
    assert task.next_run_at == T0


# ----------------------------------------------------------------------------- the tick's read


@pytest.mark.django_db
def test_the_due_read_returns_each_tasks_recorded_fires_since_its_next_run_and_active_runs(
    probe_task,
):
    """The one statement a chunk reads with: the fires that already have a run in
    [next_run_at, now] (exactly-once), and the runs still queued or running as the
    separate read of active runs sees them."""
    task = probe_task(now=T0 - MIN, overlap="allow")
    other = probe_task(now=T0 - MIN, overlap="skip")
    before, at, inside, after = (defer_one(task, T0 + i * MIN) for i in (-2, 0, 3, 9))
    set_job_status(at, "doing")
    sql("DELETE FROM procrastinate_jobs WHERE id = %s", [inside.job_id])  # purged: stale
    Task.objects.filter(pk__in=[task.pk, other.pk]).update(next_run_at=T0)
    now = T0 + 5 * MIN

    batch = tick_store.lock_due_tasks(now, limit=10)

    assert [t.pk for t in batch.tasks] == [task.pk, other.pk]
    assert batch.done == {(task.pk, at.scheduled_for), (task.pk, inside.scheduled_for)}
    separate = run_records.active_runs([task.pk, other.pk])
    assert (batch.active.queued, batch.active.running) == (separate.queued, separate.running)
    assert batch.active.queued == {task.pk: 2}  # before and after wait
    assert batch.active.running == {task.pk: 1}
    assert batch.active.stale == separate.stale == {inside.pk: "cancelled"}
    assert before.scheduled_for < T0 and after.scheduled_for > now


# ----------------------------------------------------------------------------- integrity


def tenant_of_runs(task: Task) -> set[int]:
    return set(TaskRun.objects.filter(task=task).values_list("tenant_id", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("wrong", ["tenant", "task"])
def test_the_database_refuses_a_run_of_another_tenant_than_its_tasks_or_of_no_task(
    probe_task, other_tenant, wrong
):
    """Tenant-scoped pages filter runs by their tenant: a run carrying another tenant
    than its Task's would show one tenant's run to another. One foreign key on
    (task, tenant) refuses it, and a run of a Task that does not exist."""
    from django.db import IntegrityError, transaction

    task = probe_task(now=T0 - MIN)
    run = defer_one(task)
    column, value = ("tenant_id", other_tenant.pk) if wrong == "tenant" else ("task_id", -1)
    with pytest.raises(IntegrityError, match="taskrun_task_tenant_fk"), transaction.atomic():
        sql(f"UPDATE scheduler_taskrun SET {column} = %s WHERE id = %s", [value, run.pk])
        sql("SET CONSTRAINTS ALL IMMEDIATE")
    assert tenant_of_runs(task) == {task.tenant_id}


@pytest.mark.django_db
def test_runs_follow_their_task_to_another_tenant_and_go_with_it(probe_task, other_tenant):
    task = probe_task(now=T0 - MIN)
    defer_one(task, T0)
    defer_one(task, T0 + MIN)
    sql("UPDATE scheduler_task SET tenant_id = %s WHERE id = %s", [other_tenant.pk, task.pk])
    sql("SET CONSTRAINTS ALL IMMEDIATE")

    assert tenant_of_runs(task) == {other_tenant.pk}

    Task.objects.filter(pk=task.pk).delete()  # the runs go first, then the Task
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    assert not TaskRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_chunk_commits_without_waiting_for_the_flush_and_only_that_transaction(
    clean_jobs, probe_task, monkeypatch
):
    """The tick's chunks commit asynchronously (a crash of PostgreSQL loses a whole chunk,
    due again at the next tick); other transactions of the connection, and a tick run
    inside a caller's transaction, keep the server's setting."""
    from django.db import transaction

    probe_task(now=T0 - MIN, overlap="allow")
    seen: list[str] = []
    advance_tasks = tick_store.advance_tasks

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    def watched(*args, **kwargs):
        seen.append(setting())
        return advance_tasks(*args, **kwargs)

    monkeypatch.setattr(tick_store, "advance_tasks", watched)
    server = setting()

    assert len(run_tick(T0).deferred) == 1
    assert setting() == server == "on"
    with transaction.atomic():
        assert len(run_tick(T0 + MIN).deferred) == 1
        assert setting() == "on"
    assert seen == ["off", "on"]


@pytest.mark.django_db
def test_kwargs_with_an_integer_beyond_64_bits_reach_the_job_exactly(probe_task):
    """PostgreSQL's jsonb keeps such an integer exactly; the document that builds the job
    rows must too (orjson refuses it, so that document takes the standard library's path)."""
    huge = 10**30 + 7
    task = probe_task(now=T0 - MIN, kwargs={"fail_first": huge})

    assert len(run_tick(T0).deferred) == 1

    job = ProcrastinateJob.objects.get(id=TaskRun.objects.get(task=task).job_id)
    assert job.args["kwargs"] == {"fail_first": huge}
    assert job.args["scheduled_for"] == T0.isoformat()


@pytest.mark.django_db(transaction=True)
def test_upgrading_gives_a_run_saved_with_another_tenant_its_tasks_tenant(
    clean_jobs, probe_task, other_tenant
):
    """Before the (tenant, task) key, nothing stopped a run from carrying another tenant
    than its Task's; the migrations that add the key give such a run its Task's tenant
    (it would otherwise show on the other tenant's pages), then validate the key."""
    task = probe_task(now=T0 - MIN)
    run = defer_one(task)
    MigrationExecutor(connection).migrate([("scheduler", "0012_task_tenant_rank")])
    try:
        sql("UPDATE scheduler_taskrun SET tenant_id = %s WHERE id = %s", [other_tenant.pk, run.pk])
    finally:
        migrate_to_latest()

    assert TaskRun.objects.get(pk=run.pk).tenant_id == task.tenant_id
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'taskrun_task_tenant_fk'"
        )
        assert cursor.fetchone() == (True,)
