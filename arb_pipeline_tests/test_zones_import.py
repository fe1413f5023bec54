"""`arb zones import PATH` (the real command, in a subprocess) loads a zoning shapefile with
shp2pgsql into TranSappViz's zones: the EOD 2012 zoning gives 866 zones in which known places of
Santiago fall in their comuna (PostGIS point in polygon); the same file again changes nothing;
another zoning replaces it, clearing references to zones it lacks; a file that isn't a
shapefile is refused with exit 2 and changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from arb_pipeline.ops.zoning import ZONES, bundled_zoning, zoning_digest

Z = f'"{ZONES}"'

# Known places (lon, lat) and their comuna, each checked against a map: the historic centre,
# the presidential palace, the tallest building, the Alameda's railway station, the park of
# the national holidays, a square and the airport outside the centre.
PLACES = {
    "Plaza de Armas": (-70.6505, -33.4378, "Santiago"),
    "Palacio de La Moneda": (-70.6540, -33.4429, "Santiago"),
    "Costanera Center": (-70.6063, -33.4175, "Providencia"),
    "Estación Central (station)": (-70.6797, -33.4516, "Estación Central"),
    "Parque O'Higgins": (-70.6610, -33.4640, "Santiago"),
    "Plaza Ñuñoa": (-70.5946, -33.4548, "Ñuñoa"),
    "Aeropuerto Arturo Merino Benítez": (-70.7858, -33.3930, "Pudahuel"),
}
OFFSHORE = (-72.0, -33.5)  # the Pacific, west of the zoning's box (lon -71.437..-70.277)


def arb_zones(dsn: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arb_pipeline.cli.main", "zones", "import", *args],
        env={**os.environ, "ARB_RECEIVER_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )


def zones(dsn: str) -> dict[int, tuple]:
    """id -> (the row's xmin, its attributes, its geometry as EWKB): xmin shows a rewrite."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT id, xmin::text, zona, com, comuna, comunidad_field, ST_AsEWKB(geom) FROM {Z}"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def zone_of(conn, lon: float, lat: float, predicate: str = "ST_Contains") -> list[tuple]:
    point = "ST_SetSRID(ST_MakePoint(%s, %s), 4326)"
    args = (lon, lat)
    where = f"{predicate}(geom, {point})" if predicate == "ST_Contains" else f"{predicate}({point}, geom)"
    return conn.execute(f"SELECT zona, comuna FROM {Z} WHERE {where}", args).fetchall()


def test_import_the_eod_2012_zoning_and_again(receiver_db):
    done = arb_zones(receiver_db, str(bundled_zoning()))
    assert done.returncode == 0, done.stderr
    assert "866 zone(s)" in done.stdout and "866 added, 0 changed, 0 removed" in done.stdout
    first = zones(receiver_db)
    assert len(first) == 866 and min(first) == 1 and max(first) == 866
    with psycopg.connect(receiver_db) as conn:
        comunas, srid, types = conn.execute(
            "SELECT count(DISTINCT comuna), min(ST_SRID(geom)), array_agg(DISTINCT GeometryType(geom)) "
            f"FROM {Z}"
        ).fetchone()
        row1 = conn.execute(
            f"SELECT area, zona, com, comuna, cartodb_id, comunidad_field FROM {Z} WHERE id = 1"
        )
        assert row1.fetchone() == (497.375, 1.0, "13101", "Santiago", 509, 7.0)
        digest = zoning_digest(conn)
    assert (comunas, srid, types) == (45, 4326, ["MULTIPOLYGON"])

    again = arb_zones(receiver_db, str(bundled_zoning()))
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout
    assert zones(receiver_db) == first, "no zone rewritten"
    with psycopg.connect(receiver_db) as conn:
        assert zoning_digest(conn) == digest


def test_known_places_fall_in_their_comuna(zoned_receiver_db):
    with psycopg.connect(zoned_receiver_db) as conn:
        for place, (lon, lat, comuna) in PLACES.items():
            contains = zone_of(conn, lon, lat)
            assert [c for _, c in contains] == [comuna], place
            assert zone_of(conn, lon, lat, "ST_Intersects") == contains, place
        assert zone_of(conn, *OFFSHORE) == [] and zone_of(conn, *OFFSHORE, "ST_Intersects") == []
        # The lookup a batch of events makes goes through the spatial index.
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM {Z} "
            "WHERE ST_Contains(geom, ST_SetSRID(ST_MakePoint(-70.65, -33.44), 4326))"
        ).fetchall()
        assert any("Index" in line[0] for line in plan), plan


def _export(dsn: str, folder: Path, query: str) -> Path:
    """A shapefile written by PostGIS's pgsql2shp from ``query`` (another zoning)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    out = folder / "other_zoning"
    subprocess.run(
        ["pgsql2shp", "-f", str(out), "-h", params["host"], "-p", str(params["port"]), "-u", params["user"]]
        + [params["dbname"], query],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.with_suffix(".shp")


def test_another_zoning_replaces_the_zones_and_clears_references_to_gone_ones(zoned_receiver_db, tmp_path):
    dsn = zoned_receiver_db
    with psycopg.connect(dsn) as conn:
        report = conn.execute(
            'INSERT INTO "AndroidRequests_report" ("timeStamp", message, "reportInfo", "phoneId") '
            "VALUES (now(), 'm', '{}', gen_random_uuid()) RETURNING id"
        ).fetchone()[0]
        for zone in (20, 500):
            conn.execute(
                'INSERT INTO "AndroidRequests_reportinfo" ("reportType", "registrationPlate", longitude, '
                "latitude, report_id, zonification_id) VALUES ('bus', 'AA1111', -70.65, -33.44, %s, %s)",
                (report, zone),
            )
        before = zoning_digest(conn)
    # The first 100 zones, zone 20 moved 0.01 degrees east, comunidad_ renamed as the dbf has it.
    other = _export(
        dsn,
        tmp_path,
        "SELECT id, area, zona, com, comuna, cartodb_id, created_at, updated_at, "
        "comunidad_field AS comunidad_, "
        "CASE WHEN id = 20 THEN ST_Translate(geom, 0.01, 0) ELSE geom END AS geom "
        f"FROM {Z} WHERE id <= 100",
    )
    done = arb_zones(dsn, str(other))
    assert done.returncode == 0, done.stderr
    assert "0 added, 1 changed, 766 removed (1 event/report zone(s) cleared)" in done.stdout
    assert sorted(zones(dsn)) == list(range(1, 101))
    with psycopg.connect(dsn) as conn:
        kept = conn.execute('SELECT zonification_id FROM "AndroidRequests_reportinfo" ORDER BY id').fetchall()
        assert kept == [(20,), (None,)]
        assert zoning_digest(conn) != before, "postprocessing sees a new zoning"


@pytest.mark.parametrize("case", ["missing", "not a shapefile", "garbage", "other attributes"])
def test_a_file_that_is_not_a_zoning_is_refused_and_changes_nothing(zoned_receiver_db, tmp_path, case):
    before = zones(zoned_receiver_db)
    if case == "missing":
        path, says = tmp_path / "nowhere.shp", "not a shapefile (no nowhere.shp, nowhere.shx, nowhere.dbf)"
    elif case == "not a shapefile":
        path = tmp_path / "zones.csv"
        path.write_text("id,comuna\n1,Santiago\n")
        says = "not a shapefile (no zones.shp, zones.shx, zones.dbf)"
    elif case == "other attributes":  # a zoning, but without TranSappViz's attributes
        path = _export(zoned_receiver_db, tmp_path, f"SELECT id, comuna AS nombre, geom FROM {Z}")
        says = "the shapefile lacks attribute(s) area, cartodb_id, com, comuna, comunidad_, created_at"
    else:
        for suffix in (".shp", ".shx", ".dbf"):
            (tmp_path / f"bad{suffix}").write_bytes(b"this is not a shapefile\n" * 10)
        path, says = tmp_path / "bad.shp", "shp2pgsql could not read it as a shapefile"
    done = arb_zones(zoned_receiver_db, str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("arb zones: error: ") and says in done.stderr, done.stderr
    assert zones(zoned_receiver_db) == before
