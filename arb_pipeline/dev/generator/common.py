"""Small shared pieces of the workload generator: table names, id blocks, COPY, seeded values.

Kept apart so the reference seeder, the live workload and the bulk scaler agree on one
spelling of each table and one way of drawing uuids from a seeded ``random.Random``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import psycopg

from arb_pipeline.errors import ArbError
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.postprocess.tables import app_table_sql

# The app's TIME_ZONE ('Chile/Continental' is an alias of this zone); used only where the
# app formats local wall-clock time, e.g. image file names.
APP_TZ = ZoneInfo("America/Santiago")

# A Santiago-like bounding box: every generated coordinate falls inside it.
LON_MIN, LON_MAX = -70.85, -70.45
LAT_MIN, LAT_MAX = -33.65, -33.30


class GeneratorError(ArbError):
    """The workload generator cannot run against this database or with these settings."""


def table(model: str) -> str:
    """The quoted table name Django gives a model of the AndroidRequests app."""
    return app_table_sql(model)


def take_ids(cur: psycopg.Cursor, model: str, n: int) -> list[int]:
    """Draw ``n`` ids from a table's serial sequence, for rows whose children need them.

    Bulk writes need parent ids up front so child rows can reference them. Taking them
    with nextval needs no table lock, so a long transaction elsewhere (a late vote) never
    makes a bulk load wait; the ids are unique, though not always consecutive.
    """
    if n <= 0:
        return []
    cur.execute(
        "SELECT array_agg(nextval(pg_get_serial_sequence(%s, 'id')) ORDER BY g) "
        "FROM generate_series(1, %s::bigint) g",
        (table(model), n),
    )
    return cur.fetchone()[0]


def copy_rows(cur: psycopg.Cursor, model: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """COPY rows into a table; returns how many were written."""
    cols = ", ".join(quote_ident(c) for c in columns)
    count = 0
    with cur.copy(f"COPY {table(model)} ({cols}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)
            count += 1
    return count


def rng_uuid(rng: random.Random) -> uuid.UUID:
    """A version-4 uuid drawn from a seeded generator (uuid4() would not be reproducible)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def rng_point(rng: random.Random) -> tuple[float, float]:
    """A (longitude, latitude) pair inside the Santiago box, rounded like a phone's GPS."""
    return (round(rng.uniform(LON_MIN, LON_MAX), 6), round(rng.uniform(LAT_MIN, LAT_MAX), 6))


def jitter(rng: random.Random, lon: float, lat: float, metres: float = 150.0) -> tuple[float, float]:
    """A point within roughly ``metres`` of another, clamped to the box."""
    d = metres / 111_000.0
    return (
        round(min(LON_MAX, max(LON_MIN, lon + rng.uniform(-d, d))), 6),
        round(min(LAT_MAX, max(LAT_MIN, lat + rng.uniform(-d, d))), 6),
    )
