"""The convention between tenants and procrastinate queues, defined once.

Every job of a tenant goes to the queue named after the tenant's id (``"1"``, ``"2"``, …),
so a worker started with ``-q 1`` serves exactly tenant 1. Queues that are not a tenant's
(``scheduler``) belong to no tenant.
"""

from __future__ import annotations

from typing import Protocol


class _HasPk(Protocol):
    @property
    def pk(self) -> int | None: ...


def queue_for(tenant: _HasPk | int) -> str:
    """The queue of a tenant (or of a tenant id)."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    if tenant_id is None:
        raise ValueError("an unsaved tenant has no queue yet")
    return str(tenant_id)


def tenant_for(queue: str) -> int | None:
    """The id of the tenant whose queue this is, or None for any other queue."""
    return int(queue) if queue.isascii() and queue.isdigit() else None
