"""Zones for the receiver: a grid of rectangles over the generator's city box.

The receiver's zones (``AndroidRequests_zonification``) are its own reference data,
not replicated. This writes a ``columns`` x ``rows`` grid covering the box every
generated coordinate falls in; cells share their edges exactly. Idempotent: cells are
upserted by (comuna, zona), so running it again changes nothing, and with
``replace=True`` zones that are not part of the grid are removed.
"""

from __future__ import annotations

import psycopg

from arb_pipeline.dev.generator.common import LAT_MAX, LAT_MIN, LON_MAX, LON_MIN, GeneratorError
from arb_pipeline.dev.generator.vocab import COMUNAS
from arb_pipeline.postprocess.tables import app_table_sql

TABLE = app_table_sql("zonification")


def grid_cells(columns: int = 8, rows: int = 7, box=(LON_MIN, LAT_MIN, LON_MAX, LAT_MAX)):
    """(comuna, zona, polygon WKT) per cell, west to east then south to north; zona from 1."""
    if columns < 1 or rows < 1:
        raise GeneratorError(f"a zone grid needs at least one column and one row, got {columns} x {rows}")
    x0, y0, x1, y1 = box
    xs = [round(x0 + (x1 - x0) * i / columns, 9) for i in range(columns + 1)]
    ys = [round(y0 + (y1 - y0) * j / rows, 9) for j in range(rows + 1)]
    cells = []
    for j in range(rows):
        for i in range(columns):
            zona = j * columns + i + 1
            a, b, c, d = xs[i], ys[j], xs[i + 1], ys[j + 1]
            wkt = f"POLYGON (({a} {b}, {c} {b}, {c} {d}, {a} {d}, {a} {b}))"
            cells.append((COMUNAS[(zona - 1) % len(COMUNAS)], zona, wkt))
    return cells


def seed_zones(conn: psycopg.Connection, columns: int = 8, rows: int = 7, *, replace: bool = False) -> int:
    """Write the grid into the receiver's zones; returns the number of cells."""
    cells = grid_cells(columns, rows)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {TABLE} (comuna, zona, polygon_wkt) VALUES (%s, %s, %s) "
            "ON CONFLICT (comuna, zona) DO UPDATE SET polygon_wkt = EXCLUDED.polygon_wkt "
            f"WHERE {TABLE}.polygon_wkt IS DISTINCT FROM EXCLUDED.polygon_wkt",
            cells,
        )
        if replace:
            cur.execute(
                f"DELETE FROM {TABLE} z WHERE (comuna, zona) NOT IN "
                "(SELECT c, n FROM unnest(%s::text[], %s::int[]) AS g(c, n))",
                ([c[0] for c in cells], [c[1] for c in cells]),
            )
    return len(cells)
