"""Migration 0200 gives the receiver TranSappViz's own columns and tables, exactly as its models
declare them (InspectorIncognito/visualization 6f97058): all of them on an empty receiver, only
what is missing on one TranSappViz created, whose objects and rows it leaves as they are. It
needs PostGIS, and says so before changing anything when the extension can't be created.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import time

import psycopg
import pytest

from arb_pipeline.errors import SchemaError
from arb_pipeline.schema.migrate import APP, Migration, _check_extension, apply_migrations, migrations_for

_names = itertools.count()

# The facts (AndroidRequests/models.py at HEAD): (table, column) -> (type, nullable).
FK = ("integer", True)
TRANSAPPVIZ_COLUMNS = {
    ("eventforbusv2", "timePeriod_id"): FK,
    ("eventforbusv2", "halfHourPeriod_id"): FK,
    ("eventforbusv2", "zonification_id"): FK,
    ("eventforbusv2", "busStop1"): ("character varying(6)", True),
    ("eventforbusv2", "busStop2"): ("character varying(6)", True),
    ("eventforbusv2", "direction"): ("character varying(1)", True),
    ("eventforbusv2", "transformed"): ("boolean", True),
    ("eventforbusstop", "timePeriod_id"): FK,
    ("eventforbusstop", "halfHourPeriod_id"): FK,
    ("eventforbusstop", "zonification_id"): FK,
    ("eventforbusstop", "transformed"): ("boolean", True),
    ("busstop", "transformed"): ("boolean", True),
    ("busstop", "point"): ("geometry(Point,32140)", True),
    ("busv2", "transformed"): ("boolean", True),
    ("report", "transformed"): ("boolean", True),
}
TRANSAPPVIZ_TABLES = {
    "reportinfo": {
        "id": ("integer", False),
        "reportType": ("character varying(7)", False),
        "busUUID": ("uuid", True),
        "service": ("character varying(11)", True),
        "registrationPlate": ("character varying(8)", False),
        "stopCode": ("character varying(6)", True),
        "longitude": ("double precision", False),
        "latitude": ("double precision", False),
        "report_id": ("integer", False),
        "zonification_id": FK,
        "transformed": ("boolean", True),
        "direction": ("character varying(1)", True),
        "userLatitude": ("double precision", True),
        "userLongitude": ("double precision", True),
    },
    "timeperiod": {
        "id": ("integer", False),
        "day_type": ("character varying(8)", False),
        "name": ("character varying(30)", False),
        "initial_time": ("time without time zone", False),
        "end_time": ("time without time zone", False),
    },
    "halfhourperiod": {
        "id": ("integer", False),
        "name": ("character varying(30)", False),
        "initial_time": ("time without time zone", False),
        "end_time": ("time without time zone", False),
    },
    "zonificationtransantiago": {
        "id": ("integer", False),
        "area": ("double precision", False),
        "zona": ("double precision", False),
        "com": ("character varying(80)", False),
        "comuna": ("character varying(80)", False),
        "cartodb_id": ("integer", False),
        "created_at": ("date", False),
        "updated_at": ("date", False),
        "comunidad_field": ("double precision", True),
        "geom": ("geometry(MultiPolygon,4326)", False),
    },
}
FOREIGN_KEYS = {
    ("eventforbusv2", "timePeriod_id"): "timeperiod",
    ("eventforbusv2", "halfHourPeriod_id"): "halfhourperiod",
    ("eventforbusv2", "zonification_id"): "zonificationtransantiago",
    ("eventforbusstop", "timePeriod_id"): "timeperiod",
    ("eventforbusstop", "halfHourPeriod_id"): "halfhourperiod",
    ("eventforbusstop", "zonification_id"): "zonificationtransantiago",
    ("reportinfo", "report_id"): "report",
    ("reportinfo", "zonification_id"): "zonificationtransantiago",
}

COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND c.relname LIKE 'AndroidRequests\\_%'
"""


def _t(short: str) -> str:
    return f"AndroidRequests_{short}"


def columns(dsn) -> dict[tuple[str, str], tuple]:
    """(table, column) -> (type, nullable, default, comment) of the app's tables."""
    with psycopg.connect(dsn) as conn:
        return {(r[0], r[1]): r[2:] for r in conn.execute(COLUMNS_SQL)}


def foreign_keys(dsn) -> dict[tuple[str, str], tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname, r.relname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid "
            "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] WHERE k.contype = 'f'"
        ).fetchall()
    return {(t, col): (ref, definition) for t, col, ref, definition in rows}


def indexes(dsn) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")}


def rows(dsn, short: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT * FROM "{_t(short)}" ORDER BY id').fetchall()


def arb_migrate(dsn: str, *args: str) -> subprocess.CompletedProcess:
    """`arb migrate --role receiver` on ``dsn``, the real command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "arb_pipeline.cli.main", "migrate", "--role", "receiver", *args],
        env={**os.environ, "ARB_RECEIVER_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_empty_receiver_gets_exactly_transappvizs_columns_and_tables(receiver_db):
    have = columns(receiver_db)
    for (table, column), (typ, nullable) in TRANSAPPVIZ_COLUMNS.items():
        assert have[(_t(table), column)][:2] == (typ, nullable), (table, column)
        assert have[(_t(table), column)][3] == "arb:receiver-only", "loads must never write it"
    for table, cols in TRANSAPPVIZ_TABLES.items():
        got = {col: v[:2] for (t, col), v in have.items() if t == _t(table)}
        assert got == cols, table
    fks = foreign_keys(receiver_db)
    for (table, column), ref in FOREIGN_KEYS.items():
        assert fks[(_t(table), column)][0] == _t(ref)
    # A reportinfo row is derived from its report and goes with it (a complete's deletions).
    assert "ON DELETE CASCADE" in fks[(_t("reportinfo"), "report_id")][1]
    spatial = {i for i in indexes(receiver_db) if "USING gist" in i}
    assert any(_t("zonificationtransantiago") in i and "(geom)" in i for i in spatial)
    assert any(_t("busstop") in i and "(point)" in i for i in spatial)


def test_the_reference_rows_are_transappvizs(receiver_db):
    periods = rows(receiver_db, "timeperiod")
    assert len(periods) == 29
    assert [p[1] for p in periods].count("Domingo") == 8
    assert periods[0][1:] == ("Laboral", "Pre nocturno", time(0, 0), time(0, 59, 59))
    # The original's malformed '05:29:5905:30:00': what Django stored of it.
    assert periods[22][1:] == ("Domingo", "Nocturno domingo", time(1, 0), time(5, 29, 59))
    assert periods[28][1:] == ("Domingo", "Pre nocturno domingo", time(23, 0), time(23, 59, 59))
    halves = rows(receiver_db, "halfhourperiod")
    assert len(halves) == 48
    assert halves[0][1:] == ("00:00 - 00:29", time(0, 0), time(0, 29, 59))
    assert halves[-1][1:] == ("23:30 - 23:59", time(23, 30), time(23, 59, 59))


# How TranSappViz's Django migrations (GeoDjango, PostGIS backend) leave its objects.
DJANGO_DDL = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE "AndroidRequests_timeperiod" ("id" serial NOT NULL PRIMARY KEY, "day_type" varchar(8) NOT NULL,
    "name" varchar(30) NOT NULL, "initial_time" time NOT NULL, "end_time" time NOT NULL);
INSERT INTO "AndroidRequests_timeperiod" (day_type, name, initial_time, end_time)
    VALUES ('Laboral', 'Pre nocturno', '00:00:00', '00:59:59');
CREATE TABLE "AndroidRequests_halfhourperiod" ("id" serial NOT NULL PRIMARY KEY, "name" varchar(30) NOT NULL,
    "initial_time" time NOT NULL, "end_time" time NOT NULL);
INSERT INTO "AndroidRequests_halfhourperiod" (name, initial_time, end_time)
    VALUES ('00:00 - 00:29', '00:00:00', '00:29:59');
CREATE TABLE "AndroidRequests_zonificationtransantiago" ("id" integer NOT NULL PRIMARY KEY,
    "area" double precision NOT NULL, "zona" double precision NOT NULL, "com" varchar(80) NOT NULL,
    "comuna" varchar(80) NOT NULL, "cartodb_id" integer NOT NULL, "created_at" date NOT NULL,
    "updated_at" date NOT NULL, "comunidad_field" double precision NULL,
    "geom" geometry(MULTIPOLYGON,4326) NOT NULL);
CREATE INDEX "AndroidRequests_zonificationtransantiago_geom_id"
    ON "AndroidRequests_zonificationtransantiago" USING GIST ("geom");
CREATE TABLE "AndroidRequests_reportinfo" ("id" serial NOT NULL PRIMARY KEY, "reportType" varchar(7) NOT NULL,
    "busUUID" uuid NULL, "service" varchar(11) NULL, "registrationPlate" varchar(8) NOT NULL,
    "stopCode" varchar(6) NULL, "longitude" double precision NOT NULL, "latitude" double precision NOT NULL,
    "report_id" integer NOT NULL, "zonification_id" integer NULL, "transformed" boolean NULL,
    "direction" varchar(1) NULL, "userLatitude" double precision NULL, "userLongitude" double precision NULL);
ALTER TABLE "AndroidRequests_reportinfo" ADD CONSTRAINT "AndroidRequests_rep_report_id_5e6b8d1f_fk"
    FOREIGN KEY ("report_id") REFERENCES "AndroidRequests_report" ("id") DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE "AndroidRequests_reportinfo" ADD CONSTRAINT "AndroidRequests_rep_zonification_id_9a1c_fk"
    FOREIGN KEY ("zonification_id") REFERENCES "AndroidRequests_zonificationtransantiago" ("id")
    DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX "AndroidRequests_reportinfo_6f78b20c" ON "AndroidRequests_reportinfo" ("report_id");
CREATE INDEX "AndroidRequests_reportinfo_2b9b8b8e" ON "AndroidRequests_reportinfo" ("zonification_id");
"""


def _django_columns() -> str:
    out = []
    refs = {"timePeriod_id": "timeperiod", "halfHourPeriod_id": "halfhourperiod"}
    refs["zonification_id"] = "zonificationtransantiago"
    for (table, column), (typ, _) in TRANSAPPVIZ_COLUMNS.items():
        t = _t(table)
        if typ == "boolean":  # Django adds a default for existing rows, then drops it
            out.append(f'ALTER TABLE "{t}" ADD COLUMN "{column}" boolean DEFAULT false NULL;')
            out.append(f'ALTER TABLE "{t}" ALTER COLUMN "{column}" DROP DEFAULT;')
            continue
        out.append(f'ALTER TABLE "{t}" ADD COLUMN "{column}" {typ.replace("Point", "POINT")} NULL;')
        if column in refs:
            out.append(
                f'ALTER TABLE "{t}" ADD CONSTRAINT "{table}_{column}_fk" FOREIGN KEY ("{column}") '
                f'REFERENCES "{_t(refs[column])}" ("id") DEFERRABLE INITIALLY DEFERRED;'
            )
            out.append(f'CREATE INDEX "{table}_{column}_dj" ON "{t}" ("{column}");')
        if column == "point":
            out.append(f'CREATE INDEX "{table}_point_id" ON "{t}" USING GIST ("{column}");')
    return "\n".join(out)


@pytest.fixture
def transappviz_receiver(pg_cluster):
    """An unmigrated receiver as TranSapp's and TranSappViz's own migrations left it."""
    dsn = pg_cluster.create_database(f"viz_{os.getpid()}_{next(_names)}", drop_existing=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for mig in migrations_for("receiver"):
            if mig.layer == APP:
                conn.execute(mig.sql)
        conn.execute(DJANGO_DDL)
        conn.execute(_django_columns())
    return dsn


def test_a_receiver_transappviz_made_is_left_as_it_is(transappviz_receiver):
    dsn = transappviz_receiver
    before_cols, before_fks, before_ix = columns(dsn), foreign_keys(dsn), indexes(dsn)
    before_rows = {t: rows(dsn, t) for t in ("timeperiod", "halfhourperiod")}
    result = apply_migrations(dsn, "receiver")
    assert result.adopted and any(name.endswith("0200_transappviz.sql") for name in result.applied)
    after_cols = columns(dsn)
    for key, (typ, nullable, default, _comment) in before_cols.items():
        assert after_cols[key][:3] == (typ, nullable, default), key  # types, NULLs, defaults kept
    assert not {k for k in after_cols.keys() - before_cols.keys() if not k[1].startswith("arb_")}
    app_fks = {k: v for k, v in foreign_keys(dsn).items() if not k[0].startswith("arb_")}
    assert app_fks == before_fks and {(_t(t), c) for (t, c) in FOREIGN_KEYS} <= app_fks.keys()
    added = indexes(dsn) - before_ix
    ours = {c for (_, c) in TRANSAPPVIZ_COLUMNS} | {"geom", "report_id"}
    assert not [i for i in added if any(f"({c})" in i or f'("{c}")' in i for c in ours)], added
    # Its reference rows stay, however few (only an empty table gets the rows).
    assert {t: rows(dsn, t) for t in before_rows} == before_rows
    assert after_cols[(_t("eventforbusv2"), "transformed")][3] == "arb:receiver-only"


def test_without_postgis_rights_migrate_names_the_fix_and_changes_nothing(pg_cluster):
    name = f"nopostgis_{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS arb_owner_nosuper")
        conn.execute("CREATE ROLE arb_owner_nosuper LOGIN")
        conn.execute(f'CREATE DATABASE "{name}" OWNER arb_owner_nosuper TEMPLATE template0')
    dsn = pg_cluster.dsn(name).replace(f"user={pg_cluster.user}", "user=arb_owner_nosuper")
    done = arb_migrate(dsn)
    assert done.returncode == 2, done.stderr
    assert "role arb_owner_nosuper may not create it" in done.stderr
    assert "CREATE EXTENSION postgis;" in done.stderr and "nothing was changed" in done.stderr
    with psycopg.connect(dsn) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    assert tables == 0
    # The fix it names: a superuser creates the extension, then the owner migrates.
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION postgis")
    done = arb_migrate(dsn)
    assert done.returncode == 0, done.stderr
    assert (_t("zonificationtransantiago"), "geom") in columns(dsn)


def test_an_extension_the_server_lacks_names_the_debian_package(receiver_db):
    mig = Migration("0999", "x/0999_needs.sql", "CREATE EXTENSION IF NOT EXISTS postgis_nowhere;", "pipeline")
    assert mig.extensions == ["postgis_nowhere"]
    with psycopg.connect(receiver_db) as conn, pytest.raises(SchemaError) as err:
        _check_extension(conn, "postgis_nowhere", mig)
    assert "not installed on this PostgreSQL 15 server" in str(err.value)
    assert "CREATE EXTENSION postgis_nowhere;" in str(err.value)
    assert [m.extensions for m in migrations_for("receiver") if m.extensions] == [["postgis"]]


def test_dry_run_names_a_reference_table_whose_columns_differ(receiver_db):
    with psycopg.connect(receiver_db, autocommit=True) as conn:
        conn.execute('ALTER TABLE "AndroidRequests_timeperiod" RENAME COLUMN day_type TO "dayType"')
        conn.execute('ALTER TABLE "AndroidRequests_halfhourperiod" ALTER COLUMN name TYPE text')
    done = arb_migrate(receiver_db, "--dry-run")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    [timeperiod] = [line for line in lines if "FAIL" in line and "AndroidRequests_timeperiod" in line]
    assert "day_type missing (TranSappViz: character varying(8))" in timeperiod
    [half] = [line for line in lines if "FAIL" in line and "AndroidRequests_halfhourperiod" in line]
    assert "name text (TranSappViz: character varying(30))" in half
    assert any("OK" in line and "AndroidRequests_zonificationtransantiago" in line for line in lines)
