"""Announces each running worker (name, queues, host, pid) for the dashboard and /healthz.

procrastinate's own ``procrastinate_workers`` table only has an id and a heartbeat; the
dashboard promises queues too. While a worker runs (see ``announced``, entered around
each Worker's ``run`` by ``scheduler.procrastinate_internals``), a row keyed by its
procrastinate id says who it is; the row goes when the worker stops, or when procrastinate
prunes the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from procrastinate.worker import Worker


@contextlib.asynccontextmanager
async def announced(worker: Worker) -> AsyncIterator[None]:
    """Record ``worker`` once it has registered, for as long as the block runs."""
    seen: list[int] = []  # the id, kept: procrastinate clears worker_id when it stops
    announcer = asyncio.create_task(_announce(worker, seen))
    try:
        yield
    finally:
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await announcer
        if seen:
            with contextlib.suppress(Exception):
                await sync_to_async(_forget, thread_sensitive=False)(seen[0])


async def _announce(worker: Worker, seen: list[int]) -> None:
    while worker.worker_id is None:
        await asyncio.sleep(0.05)
    seen.append(worker.worker_id)
    await sync_to_async(_remember, thread_sensitive=False)(worker, seen[0])


def _remember(worker: Worker, worker_id: int) -> None:
    from scheduler import jobs
    from scheduler.models import WorkerInfo

    close_old_connections()
    jobs.forget_pruned_workers()  # rows of workers procrastinate has pruned
    WorkerInfo.objects.update_or_create(
        id=worker_id,
        defaults={
            "name": worker.worker_name or "",
            "queues": list(worker.queues) if worker.queues else None,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        },
    )
    close_old_connections()


def _forget(worker_id: int) -> None:
    from scheduler.models import WorkerInfo

    WorkerInfo.objects.filter(id=worker_id).delete()
    close_old_connections()
