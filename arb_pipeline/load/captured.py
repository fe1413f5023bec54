"""Applying a captured partial (extract/captured.py) inside the load's one transaction.

Rows are versioned by commit LSN (``arb_synced_lsn``). The newest loaded complete's
``capture_lsn`` P holds every change committed before P, so a row's effective version is the
greater of its own ``arb_synced_lsn`` and P:

* an upsert writes its row only if its commit LSN is at or after that version (a commit record
  at P is not in the complete's snapshot: it is the first thing a slot at P decodes; the same
  change applied twice writes the same values), and only if no captured delete of the key
  with a later commit LSN was loaded (``arb_captured_delete``, the tombstones: a partial loaded
  late must not bring back a row a later one deleted);
* a delete removes its row under the same version rule and the catalog's delete policy: in a
  ``shipped-only`` table only rows a backup wrote (``arb_synced_at`` set), in a ``mirror``
  table any row; never a row a kept row of a replicated table still references (the
  foreign keys are NO ACTION), as a complete's deletes (load/deletes.py). Its tombstone stays
  until a complete pinned past it loads.

Upserts go parents first, deletes children first. Without a pinned complete (P NULL) the
row's own version decides alone. Whether the whole partial is superseded is decided by
load/apply.py (``captured_partial_superseded``).
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from arb_pipeline.catalog import current_catalog, introspect, parents_first
from arb_pipeline.load.deletes import (
    LSN_VERSION_COLUMN,
    TOMBSTONES,
    VERSION_COLUMN,
    deleted_later,
    referrers,
    row_key,
    still_referenced_guard,
)
from arb_pipeline.load.merge import MergeError, content_sets, written_columns
from arb_pipeline.load.staging import MalformedFileError, TableLoad, copy_in
from arb_pipeline.ops.disk_guard import DiskFloor
from arb_pipeline.package.manifest import COMMIT_LSN_COLUMN, FileEntry, Manifest
from arb_pipeline.pg.quote import ident_list, key_match


def newest_complete_pin(conn) -> tuple[str | None, str | None]:
    """(backup id, capture_lsn) of the newest loaded complete: (None, None) if none loaded."""
    row = conn.execute(
        "SELECT backup_id, capture_lsn::text FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = "
        "'loaded' ORDER BY snapshot_time DESC LIMIT 1"
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def newest_pin(conn) -> str | None:
    """The greatest capture_lsn of the pinned completes loaded (capture/chain.py's rule)."""
    return conn.execute(
        "SELECT max(capture_lsn)::text FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = 'loaded'"
    ).fetchone()[0]


def captured_partial_superseded(conn, manifest: Manifest) -> bool | None:
    """Every transaction of the partial committed before the newest complete's pin, so that
    complete holds all of it; None: the newest complete is not pinned (load/apply.py then
    compares snapshot times, as for timestamp partials). A partial with no transaction is
    never superseded (nothing to apply)."""
    _, pin = newest_complete_pin(conn)
    last = manifest.capture.last_commit
    if pin is None:
        return None
    if last is None:
        return False
    return conn.execute("SELECT %s::pg_lsn < %s::pg_lsn", (last, pin)).fetchone()[0]


def apply_captured(conn, backup_dir: Path, manifest: Manifest, floor: DiskFloor | None) -> list[TableLoad]:
    """Apply the partial's upserts and deletes; returns one TableLoad per table it changes."""
    _, pin = newest_complete_pin(conn)
    catalog = current_catalog()
    infos = introspect(conn, list(catalog.table_names))
    upserts = {f.table: f for f in manifest.table_files()}
    deletes = {f.table: f for f in manifest.delete_files()}
    order = [t for t in parents_first(infos) if t in upserts or t in deletes]
    loads = {t: TableLoad(t, (upserts[t].rows if t in upserts else 0)) for t in order}
    for i, table in enumerate(order):
        if table in upserts:
            stage = stage_captured_file(
                conn, backup_dir, upserts[table], infos[table], f"arb_cap_u{i}", floor
            )
            loads[table].rows_written = _upsert(conn, upserts[table], infos[table], stage, manifest, pin)
    for i, table in reversed(list(enumerate(order))):  # children first
        if table in deletes:
            stage = stage_captured_file(
                conn, backup_dir, deletes[table], infos[table], f"arb_cap_d{i}", floor
            )
            loads[table].rows_in_backup += deletes[table].rows
            mirror = table in catalog.mirrored
            loads[table].rows_deleted = _delete(
                conn, infos[table], referrers(infos, table), stage, pin, mirror
            )
    return [loads[t] for t in order]


def stage_captured_file(conn, backup_dir: Path, entry: FileEntry, info, name: str, floor) -> sql.Identifier:
    """A temporary table of the file's rows, typed by the receiver; the commit LSN as pg_lsn."""
    types = {c.name: c.type for c in info.columns}
    cols = [c.name for c in entry.columns]
    if cols[-1:] != [COMMIT_LSN_COLUMN] or any(k not in cols for k in info.primary_key):
        raise MalformedFileError(
            f"backup file {entry.name} (table {entry.table}): a captured file lists its table's primary "
            f"key and ends with {COMMIT_LSN_COLUMN}; this one has columns {cols}"
        )
    stage = sql.Identifier(name)
    coldefs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(
            sql.Identifier(c), sql.SQL("pg_lsn" if c == COMMIT_LSN_COLUMN else types.get(c, "text"))
        )
        for c in cols
    )
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage, coldefs))
    copy_in(conn, Path(backup_dir) / entry.name, entry, stage, cols, floor)
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()[0]
    if count != entry.rows:
        raise MalformedFileError(f"{entry.name}: staged {count} rows but the manifest says {entry.rows}")
    return stage


def _upsert(conn, entry: FileEntry, info, stage, manifest: Manifest, pin: str | None) -> int:
    receiver_cols = set(info.column_names)
    if LSN_VERSION_COLUMN not in receiver_cols:
        raise MergeError(f"receiver table {info.name} has no {LSN_VERSION_COLUMN} column: run `arb migrate`")
    cols = written_columns(entry, info)
    non_key = [c for c in cols if c not in info.primary_key]
    sets = content_sets(non_key, receiver_cols)
    sets += [
        sql.SQL("{v} = EXCLUDED.{v}").format(v=sql.Identifier(v))
        for v in (VERSION_COLUMN, LSN_VERSION_COLUMN)
    ]
    query = sql.SQL(
        "INSERT INTO {t} AS t ({cols}, {v}, {lsn}) "
        "SELECT {scols}, %(snap)s, s.{c} FROM {s} s "
        "WHERE s.{c} >= COALESCE(%(pin)s::pg_lsn, '0/0') AND NOT {deleted_later} "
        "ON CONFLICT ({pk}) DO UPDATE SET {sets} "
        "WHERE EXCLUDED.{lsn} >= COALESCE(GREATEST(t.{lsn}, %(pin)s::pg_lsn), '0/0')"
    ).format(
        t=sql.Identifier(info.name),
        cols=ident_list(cols),
        v=sql.Identifier(VERSION_COLUMN),
        lsn=sql.Identifier(LSN_VERSION_COLUMN),
        scols=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in cols),
        c=sql.Identifier(COMMIT_LSN_COLUMN),
        s=stage,
        deleted_later=deleted_later(
            info.name, info.primary_key, "s", sql.SQL("s.{}").format(sql.Identifier(COMMIT_LSN_COLUMN))
        ),
        pk=ident_list(info.primary_key),
        sets=sql.SQL(", ").join(sets),
    )
    return conn.execute(query, {"snap": manifest.snapshot_time, "pin": pin, "table": info.name}).rowcount


def _delete(conn, info, refs, stage, pin: str | None, mirror: bool) -> int:
    match = key_match(info.primary_key)
    owned = sql.SQL("true" if mirror else "t.{} IS NOT NULL").format(sql.Identifier(VERSION_COLUMN))
    params = {"pin": pin, "table": info.name}
    deleted = conn.execute(
        sql.SQL(
            "DELETE FROM {t} t USING {s} s WHERE {match} AND {owned} "
            "AND s.{c} >= COALESCE(GREATEST(t.{lsn}, %(pin)s::pg_lsn), '0/0'){refs}"
        ).format(
            t=sql.Identifier(info.name),
            s=stage,
            match=match,
            owned=owned,
            c=sql.Identifier(COMMIT_LSN_COLUMN),
            lsn=sql.Identifier(LSN_VERSION_COLUMN),
            refs=still_referenced_guard(refs),
        ),
        params,
    ).rowcount
    conn.execute(
        sql.SQL(
            "INSERT INTO {tomb} (table_name, row_key, commit_lsn) "
            "SELECT %(table)s, {key}, s.{c} FROM {s} s WHERE s.{c} >= COALESCE(%(pin)s::pg_lsn, '0/0') "
            "ON CONFLICT (table_name, row_key) DO UPDATE "
            "SET commit_lsn = GREATEST({tomb}.commit_lsn, EXCLUDED.commit_lsn)"
        ).format(
            tomb=sql.Identifier(TOMBSTONES),
            key=row_key(info.primary_key, "s"),
            c=sql.Identifier(COMMIT_LSN_COLUMN),
            s=stage,
        ),
        params,
    )
    return deleted


def prune_tombstones(conn, pin: str) -> None:
    """A complete pinned at ``pin`` holds every row's state before it: older tombstones are moot."""
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE commit_lsn < %s::pg_lsn").format(sql.Identifier(TOMBSTONES)), (pin,)
    )
