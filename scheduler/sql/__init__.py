"""SQL that lives in the database itself (functions, triggers), one file per object, and
the helper that passes row sets to queries.

Migrations and :mod:`scheduler.run_records` read these files, so the SQL a migration
installs and the SQL the system check compares against are the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

FOLDER = Path(__file__).resolve().parent


def load(name: str) -> str:
    """The text of ``scheduler/sql/<name>.sql``."""
    return (FOLDER / f"{name}.sql").read_text(encoding="utf-8")


def json_rows(rows: Iterable[dict[str, Any]]) -> str:
    """A JSON array of row objects, datetimes as ISO 8601: a query parameter that
    ``jsonb_to_recordset`` turns into a row set.

    Row sets travel as one JSON document, encoded by orjson: psycopg would quote every
    element of a text array in Python, and the standard library's encoder spends most of
    its time formatting datetimes. orjson refuses integers beyond 64 bits, which a Task's
    kwargs may hold (PostgreSQL's jsonb keeps them exactly): those documents take the
    standard library's path, which writes the same values."""
    listed = list(rows)
    try:
        return orjson.dumps(listed).decode()
    except TypeError:
        return json.dumps(listed, default=lambda value: value.isoformat())
