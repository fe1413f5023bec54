"""The receiver's zoning: a shapefile into TranSappViz's ``AndroidRequests_zonificationtransantiago``.

PostGIS's ``shp2pgsql`` reads the shapefile (polygons become MultiPolygons) into a staging
table; then, in one transaction, the zones are made equal to the file's, keyed by its ``id``:
new ones inserted, changed ones updated, those the file lacks deleted after the references to
them (events' and reports' ``zonification_id``) are cleared. A zone whose attributes and
geometry are the same is not written, so importing the same file again changes nothing. The
zone postprocessing notices a new zoning by its reference digest of this table, and
recomputes every row's zone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from psycopg import sql

from arb_pipeline.errors import ConfigError
from arb_pipeline.pg.connect import connect

ZONES = "AndroidRequests_zonificationtransantiago"
STAGE = sql.Identifier("arb_stage", "zones_import")
SRID = 4326  # TranSappViz's geom is geometry(MultiPolygon, 4326)
# Zone column <- shapefile attribute (shp2pgsql lowercases them; dbf names have at most 10 characters).
ATTRIBUTES = {
    "id": ("id", "integer"),
    "area": ("area", "double precision"),
    "zona": ("zona", "double precision"),
    "com": ("com", "varchar(80)"),
    "comuna": ("comuna", "varchar(80)"),
    "cartodb_id": ("cartodb_id", "integer"),
    "created_at": ("created_at", "date"),
    "updated_at": ("updated_at", "date"),
    "comunidad_field": ("comunidad_", "double precision"),
}


def bundled_zoning() -> Path:
    """The EOD 2012 zoning shipped with the package (dev/data/santiago-zones-eod2012/)."""
    folder = resources.files("arb_pipeline") / "dev" / "data" / "santiago-zones-eod2012"
    return Path(str(folder / "zonificacion_eod2012.shp"))


@dataclass(frozen=True)
class ZoningImport:
    zones: int  # in the file, and now in the table
    inserted: int
    updated: int
    deleted: int
    references_cleared: int  # event and report rows whose zone is gone

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)


def _encoding(shp: Path) -> str:
    """The attributes' encoding, from the .cpg beside the file (UTF-8 without one)."""
    cpg = shp.with_suffix(".cpg")
    text = cpg.read_text("ascii", errors="replace").strip() if cpg.is_file() else ""
    return f"CP{text}" if text.isdigit() else (text or "UTF-8")


def shapefile_sql(path: Path, srid: int = SRID) -> str:
    """shp2pgsql's SQL creating and filling the staging table from ``path``."""
    shp = Path(path)
    if shp.suffix.lower() != ".shp":
        shp = shp.with_suffix(".shp")
    lacking = [s for s in (".shp", ".shx", ".dbf") if not shp.with_suffix(s).is_file()]
    if lacking:
        raise ConfigError(
            f"{path}: not a shapefile (no {', '.join(shp.with_suffix(s).name for s in lacking)}): "
            "give the .shp of a shapefile whose .shx and .dbf lie beside it"
        )
    tool = shutil.which("shp2pgsql")
    if tool is None:
        raise ConfigError(
            "shp2pgsql not found: install the Debian package postgis (as root: apt-get install postgis)"
        )
    source = f"{srid}:{SRID}" if srid != SRID else str(SRID)
    done = subprocess.run(
        # -c create, -g geometry column, -N abort on a NULL geometry, -t 2D, -Z no ANALYZE.
        [tool, "-c", "-s", source, "-g", "geom", "-N", "abort", "-t", "2D", "-Z", "-W", _encoding(shp)]
        + ["--", str(shp), "arb_stage.zones_import"],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    if done.returncode != 0 or "CREATE TABLE" not in done.stdout:
        detail = " ".join(done.stderr.split())[-400:]
        raise ConfigError(f"{path}: shp2pgsql could not read it as a shapefile: {detail}")
    return done.stdout


def import_zoning(dsn: str, path: Path, srid: int = SRID) -> ZoningImport:
    """Make the receiver's zones those of the shapefile at ``path`` (coordinates in ``srid``)."""
    script = shapefile_sql(path, srid)
    with connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f'public."{ZONES}"',)).fetchone()[0] is None:
            raise ConfigError(f"the receiver has no {ZONES}: run `arb migrate --role receiver` first")
        # One import at a time: they share the staging table. Released when the session ends.
        conn.execute("SELECT pg_advisory_lock(hashtext('arb_zones_import'))")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(STAGE))
        try:
            conn.execute(script)  # shp2pgsql's own BEGIN ... COMMIT
            with conn.transaction():
                return _replace(conn, path)
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(STAGE))


def _replace(conn, path: Path) -> ZoningImport:
    staged = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'arb_stage.zones_import'::regclass "
            "AND attnum > 0 AND NOT attisdropped"
        )
    }
    lacking = sorted(src for src, _ in ATTRIBUTES.values() if src not in staged)
    if lacking:
        raise ConfigError(
            f"{path}: the shapefile lacks attribute(s) {', '.join(lacking)} that TranSappViz's zones "
            f"hold ({', '.join(src for src, _ in ATTRIBUTES.values())}); nothing was changed"
        )
    bad = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE id IS NULL), count(id) - count(DISTINCT id), count(*) FROM {}"
        ).format(STAGE)
    ).fetchone()
    if bad[0] or bad[1] or not bad[2]:
        raise ConfigError(
            f"{path}: zones need a unique, non-empty `id` ({bad[0]} without one, {bad[1]} repeated, "
            f"{bad[2]} zones); nothing was changed"
        )
    zones = sql.Identifier(ZONES)
    cols = list(ATTRIBUTES) + ["geom"]
    select = sql.SQL(", ").join(
        [
            sql.SQL("{}::{} AS {}").format(sql.Identifier(src), sql.SQL(typ), sql.Identifier(col))
            for col, (src, typ) in ATTRIBUTES.items()
        ]
        # An invalid polygon is repaired rather than refused: point in polygon needs it valid.
        + [
            sql.SQL(
                "ST_Multi(ST_CollectionExtract(ST_MakeValid(geom), 3))::geometry(MultiPolygon, 4326) AS geom"
            )
        ]
    )
    # Postprocessing reads zones in its own transactions: one consistent zoning at a time.
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(zones))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE arb_zones_new ON COMMIT DROP AS SELECT {} FROM {}").format(select, STAGE)
    )
    cleared = 0
    for table, column in _references(conn):
        cleared += conn.execute(
            sql.SQL("UPDATE {t} SET {c} = NULL WHERE {c} NOT IN (SELECT id FROM arb_zones_new)").format(
                t=sql.Identifier(table), c=sql.Identifier(column)
            )
        ).rowcount
    deleted = conn.execute(
        sql.SQL("DELETE FROM {} WHERE id NOT IN (SELECT id FROM arb_zones_new)").format(zones)
    ).rowcount
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    changed = sql.SQL(" OR ").join(
        sql.SQL("z.{c} IS DISTINCT FROM EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in ATTRIBUTES
    )
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO {z} AS z ({cols}) SELECT {cols} FROM arb_zones_new "
            "ON CONFLICT (id) DO UPDATE SET {set} "
            "WHERE {changed} OR ST_AsEWKB(z.geom) IS DISTINCT FROM ST_AsEWKB(EXCLUDED.geom) "
            "RETURNING (xmax = 0)"
        ).format(
            z=zones,
            cols=col_list,
            set=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols if c != "id"
            ),
            changed=changed,
        )
    ).fetchall()
    inserted = sum(1 for r in rows if r[0])
    return ZoningImport(bad[2], inserted, len(rows) - inserted, deleted, cleared)


def _references(conn) -> list[tuple[str, str]]:
    """(table, column) of every foreign key pointing at the zones (Django's, or 0200's)."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT c.relname, a.attname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
            "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1] "
            "WHERE k.contype = 'f' AND k.confrelid = %s::regclass ORDER BY 1, 2",
            (f'public."{ZONES}"',),
        )
    ]


def zoning_digest(conn) -> str:
    """md5 of the zones (ids, attributes, geometry): equal exactly when the zoning is."""
    return conn.execute(
        sql.SQL(
            "SELECT md5(coalesce(string_agg(concat_ws('|', id, zona, com, comuna, md5(ST_AsEWKB(geom))), "
            "',' ORDER BY id), '')) FROM {}"
        ).format(sql.Identifier(ZONES))
    ).fetchone()[0]
