"""The check after a captured partial's load (load/checks.py checks the other backups): every
change it carries is settled on the receiver, by the rules of load/captured.py.

An upserted row is settled when the receiver has its key at the change's commit LSN or newer,
or a later captured delete removed it (a tombstone), or the newest complete's pin is past the
change (that complete holds the row's state). A deleted key is settled when the receiver has
no row of it, or has a newer version, or the row is one the delete leaves by policy: the
receiver's own row in a ``shipped-only`` table, a row a kept row still references. The staged
files and the check's reads go with a transaction that is rolled back.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from arb_pipeline.catalog import current_catalog, introspect
from arb_pipeline.load.apply import LoadResult
from arb_pipeline.load.captured import newest_complete_pin, stage_captured_file
from arb_pipeline.load.checks import TableCheck, _transaction
from arb_pipeline.load.deletes import (
    LSN_VERSION_COLUMN,
    VERSION_COLUMN,
    deleted_later,
    referrers,
    still_referenced_guard,
)
from arb_pipeline.package.manifest import COMMIT_LSN_COLUMN, Manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import key_match


def check_captured_partial(
    dsn: str, backup_dir: Path, manifest: Manifest, load: LoadResult
) -> dict[str, TableCheck]:
    """One check per table the captured partial changes."""
    tables = list(dict.fromkeys(f.table for f in manifest.table_files() + manifest.delete_files()))
    if load.outcome == "superseded":
        return {
            t: TableCheck(t, True, f"superseded by complete {load.superseded_by}: nothing to check")
            for t in tables
        }
    catalog = current_catalog()
    out = {}
    with connect(dsn, autocommit=True, application_name="arb_check") as conn:
        infos = introspect(conn, list(catalog.table_names))
        with _transaction(conn):
            _, pin = newest_complete_pin(conn)
            upserts = {f.table: f for f in manifest.table_files()}
            deletes = {f.table: f for f in manifest.delete_files()}
            for i, table in enumerate(tables):
                info, counts = infos[table], {}
                if table in upserts:
                    stage = stage_captured_file(conn, backup_dir, upserts[table], info, f"arb_chk_u{i}", None)
                    counts["upserts"] = (_unsettled_upserts(conn, info, stage, pin), upserts[table].rows)
                if table in deletes:
                    stage = stage_captured_file(conn, backup_dir, deletes[table], info, f"arb_chk_d{i}", None)
                    mirror = table in catalog.mirrored
                    refs = referrers(infos, table)
                    counts["deletes"] = (
                        _unsettled_deletes(conn, info, stage, pin, mirror, refs),
                        deletes[table].rows,
                    )
                bad = {k: n for k, (n, _) in counts.items() if n}
                text = "; ".join(f"{total - n} of {total} {k} settled" for k, (n, total) in counts.items())
                out[table] = TableCheck(
                    table,
                    not bad,
                    text if not bad else f"{table}: {text} (commit LSN rules of load/captured.py)",
                    {f"{k}_unsettled": n for k, (n, _) in counts.items()},
                )
    return out


def _lsn(alias: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(COMMIT_LSN_COLUMN))


def _match(info) -> sql.Composable:
    return key_match(info.primary_key)


def _unsettled_upserts(conn, info, stage, pin) -> int:
    query = sql.SQL(
        "SELECT count(*) FROM {s} s WHERE s.{c} >= COALESCE(%(pin)s::pg_lsn, '0/0') "
        "AND NOT {deleted} AND NOT EXISTS (SELECT 1 FROM {t} t WHERE {match} AND t.{lsn} >= s.{c})"
    ).format(
        s=stage,
        c=sql.Identifier(COMMIT_LSN_COLUMN),
        deleted=deleted_later(info.name, info.primary_key, "s", _lsn("s")),
        t=sql.Identifier(info.name),
        match=_match(info),
        lsn=sql.Identifier(LSN_VERSION_COLUMN),
    )
    return conn.execute(query, {"pin": pin}).fetchone()[0]


def _unsettled_deletes(conn, info, stage, pin, mirror: bool, refs) -> int:
    kept_by_policy = sql.SQL("false" if mirror else "t.{} IS NULL").format(sql.Identifier(VERSION_COLUMN))
    query = sql.SQL(
        "SELECT count(*) FROM {s} s JOIN {t} t ON {match} "
        "WHERE s.{c} >= COALESCE(GREATEST(t.{lsn}, %(pin)s::pg_lsn), '0/0') "
        "AND NOT {kept_by_policy} AND (true{not_referenced})"
    ).format(
        s=stage,
        t=sql.Identifier(info.name),
        match=_match(info),
        c=sql.Identifier(COMMIT_LSN_COLUMN),
        lsn=sql.Identifier(LSN_VERSION_COLUMN),
        kept_by_policy=kept_by_policy,
        not_referenced=still_referenced_guard(refs),
    )
    return conn.execute(query, {"pin": pin}).fetchone()[0]
