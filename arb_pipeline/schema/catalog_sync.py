"""The pipeline's per-table objects, derived from the catalog on every ``arb migrate``.

Which tables travel is the catalog file's to say, so what the pipeline adds to each of
them is not a numbered migration but this sync, which compares the database with the
catalog and adds only what is missing:

- on the receiver, each replicated table's version columns (``arb_synced_at``: the sender
  snapshot time of the backup that last wrote the row; a load writes a row only when its
  backup is not older, and a complete deletes only rows some backup wrote; ``arb_synced_lsn``:
  the commit LSN of the captured change that last wrote it, or the complete's pinned position,
  load/captured.py), marked as the receiver's own so no backup writes them;
- on both sides, ``arb_role_table``: the tables the pipeline's database role may use
  (deploy/sql/*-role.sql grant exactly that list).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from arb_pipeline.catalog import Catalog
from arb_pipeline.errors import SchemaError
from arb_pipeline.load.deletes import LSN_VERSION_COLUMN, VERSION_COLUMN
from arb_pipeline.load.merge import RECEIVER_ONLY_MARK

VERSION_COMMENT = f"{RECEIVER_ONLY_MARK}: sender snapshot time of the last write"
LSN_VERSION_COMMENT = (
    f"{RECEIVER_ONLY_MARK}: commit LSN of the last captured change, or the capture_lsn of "
    "the complete that last wrote the row"
)
# Each replicated table's receiver-only version columns: (name, type, comment).
VERSION_COLUMNS = (
    (VERSION_COLUMN, "timestamptz", VERSION_COMMENT),
    (LSN_VERSION_COLUMN, "pg_lsn", LSN_VERSION_COMMENT),
)
# TranSappViz's reference tables, read by postprocessing and written by the admin (migration
# 0200, `arb zones import`), with each column's format_type() as its models declare it:
# `arb migrate --dry-run` (compat.py) names a table that differs.
REFERENCE_COLUMNS = {
    "transapp": {
        "AndroidRequests_timeperiod": {
            "id": "integer",
            "day_type": "character varying(8)",
            "name": "character varying(30)",
            "initial_time": "time without time zone",
            "end_time": "time without time zone",
        },
        "AndroidRequests_halfhourperiod": {
            "id": "integer",
            "name": "character varying(30)",
            "initial_time": "time without time zone",
            "end_time": "time without time zone",
        },
        "AndroidRequests_zonificationtransantiago": {
            "id": "integer",
            "area": "double precision",
            "zona": "double precision",
            "com": "character varying(80)",
            "comuna": "character varying(80)",
            "cartodb_id": "integer",
            "created_at": "date",
            "updated_at": "date",
            "comunidad_field": "double precision",
            "geom": "geometry(MultiPolygon,4326)",
        },
    }
}
POSTPROCESS_REFERENCE_TABLES = {name: tuple(tables) for name, tables in REFERENCE_COLUMNS.items()}
# TranSappViz's tables the derivations write (besides receiver-only columns of replicated tables).
POSTPROCESS_OUTPUT_TABLES = {"transapp": ("AndroidRequests_reportinfo",)}


@dataclass(frozen=True)
class Change:
    table: str
    what: str
    statements: tuple[sql.Composable, ...]

    def describe(self) -> str:
        return f"{self.table}: {self.what}"


def role_tables(conn, role: str, catalog: Catalog) -> dict[str, str]:
    """Table name -> 'read' or 'write' for the pipeline's role on ``role``'s database."""
    if role == "sender":
        tables = {name: "read" for name in catalog.table_names}
    else:
        tables = {name: "write" for name in catalog.table_names}
        tables["arb_loaded_backup"] = "write"
        tables["arb_held_backup"] = "write"  # the guard on mass deletion records holds
        tables["arb_captured_delete"] = "write"  # captured deletes' tombstones (load/captured.py)
        tables["arb_segment_digest"] = "write"  # staged frames' digests (load/segments.py)
        if catalog.postprocess:
            own = conn.execute(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' "
                "AND (relname LIKE 'arb\\_pp\\_%' OR relname = 'arb_postprocess_state')"
            )
            tables.update({r[0]: "write" for r in own})
            tables.update({t: "write" for t in POSTPROCESS_OUTPUT_TABLES.get(catalog.postprocess, ())})
            tables.update({t: "read" for t in POSTPROCESS_REFERENCE_TABLES.get(catalog.postprocess, ())})
    # `arb check` compares the applied migrations with the code's.
    tables.update({"arb_schema_migration": "read", "arb_role_table": "read"})
    return tables


def changes(conn, role: str, catalog: Catalog) -> list[Change]:
    """What the database lacks of the catalog's per-table objects (nothing is changed)."""
    out: list[Change] = []
    if role == "receiver":
        for column, type_, comment in VERSION_COLUMNS:
            out += _version_column_changes(conn, catalog, column, type_, comment)
    if conn.execute("SELECT to_regclass('public.arb_role_table') IS NOT NULL").fetchone()[0]:
        wanted = role_tables(conn, role, catalog)
        current = dict(conn.execute("SELECT name, access FROM arb_role_table").fetchall())
        if current != wanted:
            rewrite = [sql.SQL("DELETE FROM arb_role_table")] + [
                sql.SQL("INSERT INTO arb_role_table (name, access) VALUES ({}, {})").format(
                    sql.Literal(name), sql.Literal(access)
                )
                for name, access in sorted(wanted.items())
            ]
            out.append(Change("arb_role_table", f"list {len(wanted)} table(s) for the role", tuple(rewrite)))
    return out


def _version_column_changes(conn, catalog: Catalog, column: str, type_: str, comment: str) -> list[Change]:
    out = []
    rows = conn.execute(
        "SELECT c.relname, a.attname IS NOT NULL, col_description(c.oid, a.attnum) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
        "WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (column, list(catalog.table_names)),
    ).fetchall()
    found = {name: (has, comment) for name, has, comment in rows}
    missing = [t for t in catalog.table_names if t not in found]
    if missing:
        raise SchemaError(
            f"the receiver database lacks the catalog's table(s) {', '.join(missing)}: create them "
            f"with the app's own migrations, or remove them from the catalog ({catalog.path})"
        )
    for table in catalog.table_names:
        has, current = found[table]
        ident = sql.Identifier(table)
        mark = sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            ident, sql.Identifier(column), sql.Literal(comment)
        )
        if not has:
            add = sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                ident, sql.Identifier(column), sql.SQL(type_)
            )
            out.append(Change(table, f"add column {column}", (add, mark)))
        elif not (current or "").startswith(RECEIVER_ONLY_MARK):
            out.append(Change(table, f"mark column {column} as the receiver's own", (mark,)))
    return out


def apply(conn, role: str, catalog: Catalog) -> list[Change]:
    """Make the changes :func:`changes` finds, in the caller's transaction; return them."""
    todo = changes(conn, role, catalog)
    for change in todo:
        for statement in change.statements:
            conn.execute(statement)
    return todo
