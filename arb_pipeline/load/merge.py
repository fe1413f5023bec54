"""How a backup's staged rows are merged into a replicated table, inside the load's
transaction (load/apply.py says what a load promises): only the sender's columns are
written, by primary key, each row only if the backup is newer than the row's version.

A complete's merge is one MERGE over a hash join of the staged table with the table, on
one core, inside the transaction; its staged rows are first narrowed, on both cores, to
those the MERGE acts on (load/narrow.py).
"""

from __future__ import annotations

from psycopg import sql

from arb_pipeline.errors import ArbError
from arb_pipeline.load.deletes import COMPLETE_IS_NEWER, LSN_VERSION_COLUMN, VERSION_COLUMN, deleted_later
from arb_pipeline.load.staging import TableLoad
from arb_pipeline.package.manifest import FileEntry, Manifest
from arb_pipeline.pg.introspect import TableInfo
from arb_pipeline.pg.quote import ident_list, key_match

REPROCESS_COLUMN = "transformed"
CHANGED_COLUMN = "arb_changed_at"  # receiver-only: when a load last changed the row (postprocessing's marker)
LOAD_MEMORY = "256MB"  # per-load work_mem and temp_buffers on the receiver's server


class MergeError(ArbError):
    pass


RECEIVER_ONLY_MARK = "arb:receiver-only"  # starts the comment of a column the receiver's migrations own


def receiver_only_columns(info: TableInfo) -> set[str]:
    """Columns a backup never writes, even if it carries a column of the same name: the
    version column, and those the receiver's migrations mark as their own (a column comment)."""
    return {VERSION_COLUMN, LSN_VERSION_COLUMN} | {
        c.name for c in info.columns if c.comment and c.comment.startswith(RECEIVER_ONLY_MARK)
    }


def written_columns(entry: FileEntry, info: TableInfo) -> list[str]:
    """The backup's columns a load writes: the receiver's, but not its own."""
    own = receiver_only_columns(info)
    return [c.name for c in entry.columns if c.name in set(info.column_names) and c.name not in own]


def content_sets(non_key: list[str], receiver_cols: set[str]) -> list[sql.Composable]:
    """An upsert's SET clauses (ON CONFLICT, against EXCLUDED) for the content columns and the
    postprocessing markers: ``transformed`` reset and ``arb_changed_at`` stamped when the row's
    content changed; the caller adds its version columns."""
    changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key)
        if non_key
        else sql.SQL("NULL"),
        sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in non_key)
        if non_key
        else sql.SQL("NULL"),
    )
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in non_key]
    if REPROCESS_COLUMN in receiver_cols:
        sets.append(
            sql.SQL("{r} = CASE WHEN {changed} THEN false ELSE t.{r} END").format(
                r=sql.Identifier(REPROCESS_COLUMN), changed=changed
            )
        )
    if CHANGED_COLUMN in receiver_cols:  # inserts take the column's default, clock_timestamp()
        sets.append(
            sql.SQL("{c} = CASE WHEN {changed} THEN clock_timestamp() ELSE t.{c} END").format(
                c=sql.Identifier(CHANGED_COLUMN), changed=changed
            )
        )
    return sets


def merge(conn, entry: FileEntry, info, stage: str, manifest: Manifest, load: TableLoad) -> int:
    receiver_cols = set(info.column_names)
    cols = written_columns(entry, info)
    if VERSION_COLUMN not in receiver_cols:
        raise MergeError(
            f"receiver table {info.name} has no {VERSION_COLUMN} column: run `arb migrate --role receiver`"
        )
    non_key = [c for c in cols if c not in info.primary_key]
    sets = content_sets(non_key, receiver_cols)
    sets.append(sql.SQL("{v} = EXCLUDED.{v}").format(v=sql.Identifier(VERSION_COLUMN)))
    if manifest.kind == "complete":
        return _merge_complete(conn, info, stage, cols, non_key, manifest, receiver_cols, load.changed_keys)
    # Partials refresh the version of every row they carry, changed or not, so an older
    # backup arriving later can't win (a complete's rows are guarded by supersession).
    query = sql.SQL(
        "INSERT INTO {t} AS t ({cols}, {v}) SELECT {cols}, %(snap)s FROM {s} "
        "ON CONFLICT ({pk}) DO UPDATE SET {sets} WHERE t.{v} IS NULL OR t.{v} < EXCLUDED.{v}"
    ).format(
        t=sql.Identifier(info.name),
        cols=ident_list(cols),
        v=sql.Identifier(VERSION_COLUMN),
        s=stage,
        pk=ident_list(info.primary_key),
        sets=sql.SQL(", ").join(sets),
    )
    cur = conn.execute(query, {"snap": manifest.snapshot_time})
    return cur.rowcount


def _merge_complete(
    conn, info, stage: str, cols, non_key, manifest: Manifest, receiver_cols, changed_keys=None
) -> int:
    """Whole tables: one MERGE over a hash join, writing only rows that changed, costs
    far less than probing the primary key once per row (PostgreSQL 15+). With
    ``changed_keys`` (the staged rows' lowest and highest key), the table's side is read
    between them only: a day's new rows at the end of a large table don't scan all of it."""
    conn.execute(sql.SQL("ANALYZE {}").format(stage))
    match = key_match(info.primary_key)
    if changed_keys and changed_keys[0] is not None:  # every staged row's key lies between them
        match = sql.SQL("{} AND t.{} BETWEEN {} AND {}").format(
            match,
            sql.Identifier(info.primary_key[0]),
            sql.Literal(changed_keys[0]),
            sql.Literal(changed_keys[1]),
        )
    update = sql.SQL("")
    if non_key:
        differs = sql.SQL("({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in non_key),
        )
        sets = [sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in non_key]
        sets.append(sql.SQL("{v} = %(snap)s").format(v=sql.Identifier(VERSION_COLUMN)))
        sets.append(sql.SQL("{} = %(pin)s::pg_lsn").format(sql.Identifier(LSN_VERSION_COLUMN)))
        if REPROCESS_COLUMN in receiver_cols:
            sets.append(sql.SQL("{} = false").format(sql.Identifier(REPROCESS_COLUMN)))
        if CHANGED_COLUMN in receiver_cols:
            sets.append(sql.SQL("{} = clock_timestamp()").format(sql.Identifier(CHANGED_COLUMN)))
        update = sql.SQL("WHEN MATCHED AND {newer} AND {differs} THEN UPDATE SET {sets} ").format(
            newer=COMPLETE_IS_NEWER, differs=differs, sets=sql.SQL(", ").join(sets)
        )
    # A row the receiver had before any backup wrote it (adopted history) and equal to the
    # complete's: the complete holds it, so it gets a version and is the sender's from now on.
    claim = sql.SQL(
        "WHEN MATCHED AND t.{v} IS NULL THEN UPDATE SET {v} = %(snap)s, {lsn} = %(pin)s::pg_lsn "
    ).format(v=sql.Identifier(VERSION_COLUMN), lsn=sql.Identifier(LSN_VERSION_COLUMN))
    # A pinned complete does not bring back a row a captured delete after its pin removed.
    insert_if = sql.SQL("")
    if manifest.capture_lsn is not None:
        insert_if = sql.SQL("AND NOT {} ").format(
            deleted_later(info.name, info.primary_key, "s", sql.SQL("%(pin)s::pg_lsn - 1"))
        )
    return conn.execute(
        sql.SQL(
            "MERGE INTO {t} t USING {s} s ON {match} {update}{claim}"
            "WHEN NOT MATCHED {insert_if}THEN INSERT ({cols}, {v}, {lsn}) "
            "VALUES ({scols}, %(snap)s, %(pin)s::pg_lsn)"
        ).format(
            t=sql.Identifier(info.name),
            s=stage,
            match=match,
            update=update,
            claim=claim,
            insert_if=insert_if,
            cols=ident_list(cols),
            v=sql.Identifier(VERSION_COLUMN),
            lsn=sql.Identifier(LSN_VERSION_COLUMN),
            scols=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in cols),
        ),
        {"snap": manifest.snapshot_time, "pin": manifest.capture_lsn},
    ).rowcount
