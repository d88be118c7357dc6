"""Paging a list that may hold hundreds of millions of rows (the runs).

Django's admin counts every matching row to number the pages: at 100,000 runs a minute,
``COUNT(*)`` of the runs takes seconds, then minutes. :class:`CappedPaginator` counts at
most :data:`COUNT_CAP` of them; the list says "more than" beyond that, and pages go up to
the cap (the newest runs, which are what a list is read for; filters narrow the rest).
"""

from __future__ import annotations

from functools import cached_property

from django.core.paginator import Paginator
from django.db.models import QuerySet

#: The most rows a list counts.
COUNT_CAP = 10_000


class CappedPaginator(Paginator):
    """A paginator whose ``count`` stops at ``cap`` + 1 (``capped`` says whether it did)."""

    cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        # COUNT(*) over the first cap + 1 rows in the list's order: an index walk that stops.
        head = self.object_list[: self.cap + 1]
        return head.count() if isinstance(head, QuerySet) else len(head)

    @property
    def capped(self) -> bool:
        """Whether there are more rows than were counted."""
        return self.count > self.cap
