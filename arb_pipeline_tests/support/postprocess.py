"""What postprocessing writes where TranSappViz reads, and the check that it is current."""

from __future__ import annotations

from arb_pipeline.pg.connect import connect

P = "AndroidRequests_"
ZONES = f'"{P}zonificationtransantiago"'
# replicated table -> TranSappViz's columns the derivations write on it
DERIVED_COLUMNS = {
    P + "eventforbusstop": ("timePeriod_id", "halfHourPeriod_id", "zonification_id"),
    P + "eventforbusv2": (
        "timePeriod_id",
        "halfHourPeriod_id",
        "zonification_id",
        "direction",
        "busStop1",
        "busStop2",
    ),
}
TRANSFORMED = (P + "eventforbusstop", P + "eventforbusv2", P + "report", P + "busv2")


def insert_zone(conn, zone_id: int, comuna: str, wkt: str) -> None:
    """One zone of TranSappViz's table from a (Multi)Polygon in lon/lat WKT."""
    conn.execute(
        f"INSERT INTO {ZONES} (id, area, zona, com, comuna, cartodb_id, created_at, updated_at, geom) "
        "VALUES (%s, 0, %s, %s, %s, %s, current_date, current_date, "
        "ST_Multi(ST_GeomFromText(%s, 4326)))",
        (zone_id, zone_id, comuna.upper(), comuna, zone_id, wkt),
    )


def seed_grid_zones(conn, columns: int = 4, rows: int = 4, box=(-70.85, -33.65, -70.45, -33.30)) -> int:
    """A grid of square zones over the generator's city box (ids from 1), replacing any zones;
    the tests of the derivations need zones, not the real zoning (arb zones import)."""
    x0, y0, x1, y1 = box
    conn.execute(f"DELETE FROM {ZONES}")
    for j in range(rows):
        for i in range(columns):
            a, c = x0 + (x1 - x0) * i / columns, x0 + (x1 - x0) * (i + 1) / columns
            b, d = y0 + (y1 - y0) * j / rows, y0 + (y1 - y0) * (j + 1) / rows
            n = j * columns + i + 1
            insert_zone(conn, n, f"Comuna {n}", f"POLYGON(({a} {b}, {c} {b}, {c} {d}, {a} {d}, {a} {b}))")
    return columns * rows


def derived_values(dsn: str) -> dict[str, dict[int, tuple]]:
    """TranSappViz's derived columns of every event row, and each report's reportinfo row."""
    with connect(dsn) as conn:
        out: dict[str, dict[int, tuple]] = {}
        for table, cols in DERIVED_COLUMNS.items():
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = {r[0]: tuple(r[1:]) for r in conn.execute(f'SELECT id, {quoted} FROM "{table}"')}
        out[P + "reportinfo"] = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                f'SELECT report_id, id, "reportType", "busUUID", service, "registrationPlate", "stopCode", '
                f'longitude, latitude, "userLatitude", "userLongitude", zonification_id, direction '
                f'FROM "{P}reportinfo"'
            )
        }
    return out


def assert_every_row_derived(dsn: str) -> None:
    """Every row of the derived tables is ``transformed`` (every derivation has computed it
    since it last changed) and every report that can have one has its reportinfo row."""
    with connect(dsn) as conn:
        pending = {
            t: n
            for t in TRANSFORMED
            if (n := conn.execute(f'SELECT count(*) FROM "{t}" WHERE transformed IS NOT TRUE').fetchone()[0])
        }
        missing = conn.execute(
            f'SELECT count(*) FROM "{P}report" r WHERE NOT EXISTS (SELECT FROM "{P}reportinfo" i '
            "WHERE i.report_id = r.id) AND NOT EXISTS (SELECT FROM arb_pp_problem p "
            "WHERE p.derivation = 'report_info' AND p.source_id = r.id)"
        ).fetchone()[0]
    assert not pending, f"rows not transformed after postprocessing: {pending}"
    assert not missing, f"{missing} report(s) with neither a reportinfo row nor a recorded problem"
