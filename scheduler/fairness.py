"""Fair sharing of workers between tenants, decided when a job is deferred.

procrastinate workers take the ``todo`` job of highest ``priority`` (then lowest id) among
the queues they serve. Giving every tenant job its priority here makes the order fair for
any worker, however started and with any concurrency, with nothing to run beside them.

**Weighted fair share: stride scheduling.** Each tenant has a *pass* (table
``scheduler_tenantpass``, one row per tenant). A tenant of weight ``w`` has stride
``STRIDE // w``. Each new job of tenant ``t`` gets ``pass_t = max(pass_t, V) + stride_t``
and priority ``-pass`` (a lower pass runs first). ``k`` jobs deferred together for one tenant
get ``k`` consecutive passes, so when a herd of tenants is deferred at once, every tenant's
first job comes before anyone's second (weights apart); within a tenant passes increase, so
its jobs keep their order (FIFO; jobs of one batch are taken in ``scheduled_for`` order).

``V``, the system's virtual time, is just below the lowest pass among ready tenant jobs
(``todo`` and due: the job a worker takes next), or, when none waits, the highest pass handed
out. So a tenant that was idle starts level with the job that runs next: its first job comes
right after that one, before any equal-weight tenant's following job, and it neither gets a
burst of jobs ahead (its old, low pass is raised to ``V``) nor waits behind others' backlogs. A
tenant whose own backlog is ahead of ``V`` keeps its pass: its new jobs queue behind its
backlog. Non-tenant jobs (queue ``scheduler``: the tick at 0, maintenance at -1) run before
tenant jobs (priorities -1 and below, ties taken oldest first).

**Concurrency limit.** A tenant with ``max_running = L`` gives its ``n``-th job
(a per-tenant counter) the procrastinate lock ``tenant-<id>-slot-<n mod L>``; procrastinate
runs at most one job per lock across all workers, so at most ``L`` of the tenant's jobs run
at once. Limit: a job waits for the job before it *in its slot*, even when another slot is
free (head-of-line blocking when durations vary), and procrastinate also makes a slot wait
for a retry of its own scheduled later (a retry keeps its priority and lock).

**Retries** keep the job's priority and lock (``procrastinate_retry_job_v2`` only changes them
when the RetryDecision names new ones; ours never do): a retried job keeps its place.

**Integer range.** procrastinate's priority is an int4. Passes are bigint; a priority is
``-pass``, clamped at the int4 minimum. ``V`` grows with work done (about ``STRIDE`` per job
of a weight-1 tenant); when the highest pass exceeds ``REBASE_AT`` (2^30, about 10^5 such
jobs of headroom before ordering degrades), the next defer first *rebases*: under an
exclusive lock on the pass table, every pass and every waiting or running tenant job's
priority is shifted by ``V``, which keeps every order. :func:`rebase` may also be called on
its own (e.g. from maintenance).

**Other limits.** Fairness is decided at defer time: a job deferred around this module
(``some_task.defer()`` into a tenant queue, priority 0) runs ahead of every tenant job, so
integration code defers follow-ups with ``RunContext.defer``. A tenant whose queued jobs were
cancelled keeps the pass they advanced it to until ``V`` catches up. Shares hold among the
tenants a worker serves: a worker of one tenant's queue serves that tenant alone.

Defers of one tenant queue behind each other on its pass row until the deferring transaction
commits (a tick's chunk is short). Placement adds nothing to the round trips of a defer: its
CTEs (:data:`PLACEMENT_CTES`) join the statement that inserts the jobs
(:mod:`scheduler.jobs`), in the caller's transaction.
"""

from __future__ import annotations

from django.db import connection

#: A weight-1 tenant's stride; a tenant of weight w advances by STRIDE // w per job.
STRIDE = 10_000
#: Highest pass before the next defer rebases.
REBASE_AT = 2**30
INT4_MIN = -(2**31)

#: Tenant queues are named by the tenant's id (tenants.queues).
_TENANT_JOB = "queue_name ~ '^[0-9]+$' AND priority < 0"

_VIRTUAL_TIME = f"""
    COALESCE(
        (SELECT -max(priority) - 1 FROM procrastinate_jobs
          WHERE status = 'todo' AND {_TENANT_JOB}
            AND (scheduled_at IS NULL OR scheduled_at <= now())),
        (SELECT max(pass) FROM scheduler_tenantpass),
        0)::bigint
"""

#: Common table expressions that place new tenant jobs. They read a CTE named ``wanted``
#: (``ord``: the jobs' order, 1..n; ``tenant_id``) and define ``placed(ord, priority, lock,
#: highest)``: each job's procrastinate priority and lock, and the highest pass handed out
#: (see :func:`after_defer`). A tenant's jobs get consecutive passes in ``ord`` order. The
#: pass upsert locks tenant rows in id order, so concurrent defers cannot deadlock on them.
PLACEMENT_CTES = f"""
    now_v AS (SELECT {_VIRTUAL_TIME} AS v),
    counted AS (
        SELECT w.ord, w.tenant_id,
               row_number() OVER (PARTITION BY w.tenant_id ORDER BY w.ord) AS k,
               count(*) OVER (PARTITION BY w.tenant_id) AS n
          FROM wanted w
    ),
    want AS (
        SELECT c.tenant_id, max(c.n) AS n,
               GREATEST({STRIDE} / COALESCE(max(t.weight), 1), 1)::bigint AS stride,
               max(t.max_running) AS max_running
          FROM counted c LEFT JOIN tenants_tenant t ON t.id = c.tenant_id
         GROUP BY c.tenant_id
    ),
    moved AS (
        INSERT INTO scheduler_tenantpass AS p (tenant_id, pass, seq)
        SELECT want.tenant_id, now_v.v + want.n * want.stride, want.n
          FROM want, now_v
         ORDER BY want.tenant_id
        ON CONFLICT (tenant_id) DO UPDATE
           SET pass = GREATEST(p.pass - (SELECT v FROM now_v), 0) + EXCLUDED.pass,
               seq = p.seq + EXCLUDED.seq
        RETURNING p.tenant_id, p.pass, p.seq
    ),
    placed AS (
        SELECT c.ord,
               GREATEST(-(m.pass - (c.n - c.k) * want.stride), {INT4_MIN})::int AS priority,
               CASE WHEN want.max_running > 0
                    THEN 'tenant-' || c.tenant_id || '-slot-'
                         || ((m.seq - c.n + c.k - 1) %% want.max_running)
               END AS lock,
               m.pass AS highest
          FROM counted c
          JOIN moved m USING (tenant_id)
          JOIN want USING (tenant_id)
    )
"""


def after_defer(highest: int | None) -> None:
    """Rebase when a defer handed out a pass past ``REBASE_AT`` (see :func:`rebase`); in
    the defer's transaction, so its own jobs are shifted with the others."""
    if highest is None or highest <= REBASE_AT:
        return
    # Only then is V worth reading (without the table lock rebase() takes).
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {_VIRTUAL_TIME}")
        (virtual,) = cursor.fetchone()
    if virtual >= REBASE_AT // 2:
        rebase()


_REBASE_PASSES_SQL = "UPDATE scheduler_tenantpass SET pass = GREATEST(pass - %s, 0)"
_REBASE_JOBS_SQL = f"""
    UPDATE procrastinate_jobs SET priority = LEAST(priority::bigint + %s, -1)::int
     WHERE status IN ('todo', 'doing') AND {_TENANT_JOB}
"""


def rebase() -> int:
    """Shift every pass and waiting or running tenant job's priority down by ``V``; the shift.

    Done only when the highest pass is past ``REBASE_AT`` and ``V`` past half of it (a shift
    by a smaller ``V`` frees little room and would be redone at every defer; meanwhile only
    jobs queued beyond the int4 range lose their order, running in id order). Runs in the
    caller's transaction (use ``transaction.atomic``): defers wait for it, it waits for
    defers under way (table lock); 0 when nothing was shifted.
    """
    with connection.cursor() as cursor:
        cursor.execute("LOCK TABLE scheduler_tenantpass IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(f"SELECT max(pass), {_VIRTUAL_TIME} FROM scheduler_tenantpass")
        highest, virtual = cursor.fetchone()
        # Shifting by a small V would not free room, and would be redone at every defer.
        if highest is None or highest <= REBASE_AT or virtual < REBASE_AT // 2:
            return 0
        cursor.execute(_REBASE_PASSES_SQL, [virtual])
        cursor.execute(_REBASE_JOBS_SQL, [virtual])
    return int(virtual)
