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
backlog. Non-tenant jobs (queue ``scheduler``) keep priority 0 and so run before tenant jobs.

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
commits (a tick's transaction is short). Every defer batch costs two statements here (a read
of the highest pass and one upsert ``… RETURNING`` for all the batch's tenants), in the
caller's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection

from scheduler import sql

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

_ADVANCE_SQL = f"""
    WITH now_v AS (SELECT {_VIRTUAL_TIME} AS v),
    want AS (
        SELECT w.tenant_id, w.n, GREATEST(%(stride)s / COALESCE(t.weight, 1), 1)::bigint AS stride,
               t.max_running
          FROM jsonb_to_recordset(%(rows)s::jsonb) AS w(tenant_id bigint, n bigint)
          LEFT JOIN tenants_tenant t ON t.id = w.tenant_id
    ),
    moved AS (
        INSERT INTO scheduler_tenantpass AS p (tenant_id, pass, seq)
        SELECT want.tenant_id, now_v.v + want.n * want.stride, want.n FROM want, now_v
        ON CONFLICT (tenant_id) DO UPDATE
           SET pass = GREATEST(p.pass - (SELECT v FROM now_v), 0) + EXCLUDED.pass,
               seq = p.seq + EXCLUDED.seq
        RETURNING p.tenant_id, p.pass, p.seq
    )
    SELECT moved.tenant_id, moved.pass, moved.seq, want.n, want.stride, want.max_running
      FROM moved JOIN want USING (tenant_id)
"""


@dataclass(frozen=True)
class Slot:
    """Where one job stands: its pass, the priority and lock procrastinate gets."""

    tenant_id: int
    pass_: int
    lock: str | None

    @property
    def priority(self) -> int:
        return max(-self.pass_, INT4_MIN)


def slot_lock(tenant_id: int, seq: int, max_running: int | None) -> str | None:
    """The lock of a tenant's ``seq``-th job: one of ``max_running`` slots, or none."""
    if not max_running:
        return None
    return f"tenant-{tenant_id}-slot-{seq % max_running}"


def assign(tenant_ids: Sequence[int]) -> list[Slot]:
    """One Slot per new job, in order, for jobs of these tenants (a tenant id per job; a
    tenant's jobs get increasing passes in the order given). In the caller's transaction."""
    if not tenant_ids:
        return []
    counts: dict[int, int] = defaultdict(int)
    for tenant_id in tenant_ids:
        counts[tenant_id] += 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(pass) FROM scheduler_tenantpass")
        (highest,) = cursor.fetchone()
        # Only then is V worth reading; rebase() reads both again under its lock.
        if highest is not None and highest > REBASE_AT:
            cursor.execute(f"SELECT {_VIRTUAL_TIME}")
            (virtual,) = cursor.fetchone()
            if virtual >= REBASE_AT // 2:
                rebase()
    # Tenant rows are locked in id order, so concurrent defers cannot deadlock on them.
    rows = sql.json_rows({"tenant_id": t, "n": n} for t, n in sorted(counts.items()))
    with connection.cursor() as cursor:
        cursor.execute(_ADVANCE_SQL, {"stride": STRIDE, "rows": rows})
        state = {row[0]: row[1:] for row in cursor.fetchall()}
    used: dict[int, int] = defaultdict(int)
    slots = []
    for tenant_id in tenant_ids:
        last_pass, last_seq, n, stride, max_running = state[tenant_id]
        j = used[tenant_id]
        used[tenant_id] += 1
        pass_ = last_pass - (n - 1 - j) * stride
        slots.append(Slot(tenant_id, pass_, slot_lock(tenant_id, last_seq - n + j, max_running)))
    return slots


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
