"""Announces each running worker (name, queues, host, pid) for the admin dashboard.

procrastinate's own ``procrastinate_workers`` table only has an id and a heartbeat; the
dashboard promises queues too. The hook wraps each Worker's ``run`` so that, once the
worker has registered, a row keyed by its id says who it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection


def track(worker: Any) -> Any:
    original_run = worker.run

    async def run() -> None:
        announcer = asyncio.create_task(_announce(worker))
        try:
            await original_run()
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await announcer
            announced = getattr(worker, "_metronome_announced_id", None)
            if announced is not None:  # procrastinate clears worker_id when it stops
                with contextlib.suppress(Exception):
                    await sync_to_async(_forget, thread_sensitive=False)(announced)

    worker.run = run
    return worker


async def _announce(worker: Any) -> None:
    while getattr(worker, "worker_id", None) is None:
        await asyncio.sleep(0.05)
    worker._metronome_announced_id = worker.worker_id
    await sync_to_async(_remember, thread_sensitive=False)(worker)


def _remember(worker: Any) -> None:
    from scheduler.models import WorkerInfo

    close_old_connections()
    with connection.cursor() as cursor:  # forget workers procrastinate has pruned
        cursor.execute(
            "DELETE FROM scheduler_workerinfo w WHERE NOT EXISTS "
            "(SELECT 1 FROM procrastinate_workers p WHERE p.id = w.id)"
        )
    WorkerInfo.objects.update_or_create(
        id=worker.worker_id,
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
