"""The scheduler's own procrastinate queue (tenants' queues: ``tenants.queues``).

The ``scheduler`` and maintenance jobs run there: a worker serving it schedules, and
workers serving only tenant queues never do.
"""

SCHEDULER_QUEUE = "scheduler"
