"""Loading a verified backup into the receiver's database, all or nothing.

One transaction per backup. Each table's rows are COPYed into a temporary staging
table whose column types are the receiver's own (no type or SQL text from the backup
is ever executed), then merged into the real table by primary key, parents first:

* Versions: every replicated row carries ``arb_synced_at``, the sender snapshot time of
  the backup that last wrote it. A backup writes a row only if its snapshot is newer,
  so backups can arrive in any order, twice, or late, and the newest version wins
  whether or not the app moved the row's timestamp.
* A partial whose snapshot is not newer than the newest loaded complete is
  *superseded*: everything it holds is already in that complete. It is recorded, not
  applied, so a late partial can't resurrect a row the complete deleted.
* A complete also deletes rows absent from its snapshot, but only rows it is newer
  than: rows written by later partials stay. Readers see the old state or the new,
  never a mix (MVCC), and never an empty table (no TRUNCATE, no swap by rename).
* Only the sender's columns are written. Receiver-only columns survive; where the
  receiver has a ``transformed`` column, a row whose content changed gets
  ``transformed = false`` so postprocessing redoes it.
* The ledger ``arb_loaded_backup`` is written in the same transaction: loading the same
  backup again is a no-op.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from arb_pipeline.catalog import introspect, parents_first
from arb_pipeline.errors import ArbError
from arb_pipeline.package.manifest import FileEntry, Manifest
from arb_pipeline.package.reader import iter_table_chunks

log = logging.getLogger(__name__)

LOAD_MEMORY = "256MB"   # per-load work_mem and temp_buffers on the receiver's server
VERSION_COLUMN = "arb_synced_at"
REPROCESS_COLUMN = "transformed"
RECEIVER_ONLY = {VERSION_COLUMN}


class LoadError(ArbError):
    pass


@dataclass
class TableLoad:
    table: str
    rows_in_backup: int
    rows_written: int = 0
    rows_deleted: int = 0
    ignored_columns: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)   # stage / merge / delete


@dataclass
class LoadResult:
    backup_id: str
    kind: str
    outcome: str                       # loaded | superseded | already loaded
    tables: list[TableLoad] = field(default_factory=list)
    superseded_by: str | None = None

    @property
    def rows_in_backup(self) -> int:
        return sum(t.rows_in_backup for t in self.tables)

    @property
    def rows_written(self) -> int:
        return sum(t.rows_written for t in self.tables)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)


def _id(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _ids(names) -> sql.Composable:
    return sql.SQL(", ").join(_id(n) for n in names)


def load_backup(conn, backup_dir: Path, manifest: Manifest, manifest_sha256: str) -> LoadResult:
    """Apply a verified backup in one transaction. ``conn`` must not be in a transaction."""
    backup_dir = Path(backup_dir)
    conn.autocommit = False
    # Staging tables are temporary (no WAL) and the merges are hash joins: give both room
    # so whole tables don't spill to disk in small batches. Session-local settings.
    try:
        conn.execute(f"SET temp_buffers = '{LOAD_MEMORY}'")
    except psycopg.errors.InvalidParameterValue:
        conn.rollback()  # temp tables were used earlier in this session: keep the default
    conn.commit()
    with conn.transaction():
        conn.execute(f"SET LOCAL work_mem = '{LOAD_MEMORY}'")
        # One loader at a time per database, whatever runs it (the Dagster pool also says so).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('arb_pipeline.load'))")
        done = conn.execute("SELECT manifest_sha256, outcome FROM arb_loaded_backup WHERE backup_id = %s",
                            (manifest.backup_id,)).fetchone()
        if done:
            if done[0] != manifest_sha256:
                raise LoadError(f"backup {manifest.backup_id} was already {done[1]} from a different manifest; "
                                "a backup id is never reused, so this one was altered: quarantine it")
            return LoadResult(manifest.backup_id, manifest.kind, "already loaded")
        newest_complete = conn.execute(
            "SELECT backup_id, snapshot_time FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = 'loaded' "
            "ORDER BY snapshot_time DESC LIMIT 1").fetchone()
        result = LoadResult(manifest.backup_id, manifest.kind, "loaded")
        files = manifest.table_files()
        if newest_complete and manifest.snapshot_time <= newest_complete[1]:
            result.outcome, result.superseded_by = "superseded", newest_complete[0]
            result.tables = [TableLoad(f.table, f.rows or 0) for f in files]
        else:
            infos = introspect(conn, [f.table for f in files])
            order = [t for t in parents_first(infos)]
            by_table = {f.table: f for f in files}
            staged = {}
            for i, table in enumerate(order):
                stage = f"arb_stage_{i}"
                t0 = time.perf_counter()
                load = _stage(conn, backup_dir, by_table[table], infos[table], stage)
                t1 = time.perf_counter()
                load.rows_written = _merge(conn, by_table[table], infos[table], stage, manifest, load)
                load.seconds = {"stage": t1 - t0, "merge": time.perf_counter() - t1}
                staged[table] = (stage, load)
                result.tables.append(load)
            if manifest.kind == "complete":
                for table in reversed(order):  # children first
                    stage, load = staged[table]
                    t0 = time.perf_counter()
                    load.rows_deleted = _delete_absent(conn, infos[table], stage, manifest)
                    load.seconds["delete"] = time.perf_counter() - t0
            for table in order:
                _advance_sequences(conn, infos[table])
        conn.execute(
            "INSERT INTO arb_loaded_backup (backup_id, kind, partition_key, sender_id, manifest_sha256, snapshot_time, "
            "window_start, window_end, outcome, rows_in_backup, rows_written, rows_deleted) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (manifest.backup_id, manifest.kind, manifest.partition_key, manifest.sender_id, manifest_sha256,
             manifest.snapshot_time, manifest.window_start, manifest.window_end, result.outcome,
             result.rows_in_backup, result.rows_written, result.rows_deleted))
    return result


def _stage(conn, backup_dir: Path, entry: FileEntry, info, stage: str) -> TableLoad:
    """COPY one table file into a temporary table typed by the receiver's columns."""
    receiver_types = {c.name: c.type for c in info.columns}
    backup_cols = [c.name for c in entry.columns]
    ignored = tuple(c for c in backup_cols if c not in receiver_types)
    missing_pk = [c for c in info.primary_key if c not in backup_cols]
    if missing_pk:
        raise LoadError(f"backup file {entry.name} lacks primary key column(s) {missing_pk} of {entry.table}")
    # The receiver's own type names (from its catalog) define the staging columns; a
    # column the receiver doesn't have is staged as text and then ignored.
    coldefs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(_id(c), sql.SQL(receiver_types.get(c, "text"))) for c in backup_cols)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(_id(stage), coldefs))
    path = backup_dir / entry.name
    with conn.cursor() as cur:
        if entry.format == "copy-text":
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(_id(stage), _ids(backup_cols))) as copy:
                for chunk in iter_table_chunks(path):
                    copy.write(chunk)
        else:  # jsonl: one JSON object per line, decoded by the server into the staging row type
            docs = f"{stage}_doc"
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (doc jsonb) ON COMMIT DROP").format(_id(docs)))
            with cur.copy(sql.SQL("COPY {} (doc) FROM STDIN").format(_id(docs))) as copy:
                for chunk in iter_table_chunks(path):
                    copy.write(chunk.replace(b"\\", b"\\\\"))  # COPY text format unescapes backslashes
            conn.execute(sql.SQL("INSERT INTO {s} SELECT r.* FROM {d}, jsonb_populate_record(NULL::{s}, doc) r").format(
                s=_id(stage), d=_id(docs)))
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_id(stage))).fetchone()[0]
    if count != entry.rows:
        raise LoadError(f"{entry.name}: staged {count} rows but the manifest says {entry.rows}")
    if ignored:
        log.warning("%s: column(s) %s exist on the sender but not on the receiver; they are not loaded "
                    "(add them with a receiver migration; the next complete backup fills them)",
                    entry.table, ", ".join(ignored))
    return TableLoad(entry.table, count, ignored_columns=ignored)


_RECEIVER_ONLY_SQL = """
SELECT a.attname FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND col_description(a.attrelid, a.attnum) LIKE 'arb:receiver-only%%'
"""


def receiver_only_columns(conn, table: str) -> set[str]:
    """Columns the receiver's migrations mark as its own (a column comment): a backup
    never writes them, even if it carries a column of the same name."""
    return {r[0] for r in conn.execute(_RECEIVER_ONLY_SQL, (sql.Identifier(table).as_string(conn),))}


def _merge(conn, entry: FileEntry, info, stage: str, manifest: Manifest, load: TableLoad) -> int:
    receiver_cols = set(info.column_names)
    own = RECEIVER_ONLY | receiver_only_columns(conn, info.name)
    cols = [c.name for c in entry.columns if c.name in receiver_cols and c.name not in own]
    if VERSION_COLUMN not in receiver_cols:
        raise LoadError(f"receiver table {info.name} has no {VERSION_COLUMN} column: run `arb migrate --role receiver`")
    non_key = [c for c in cols if c not in info.primary_key]
    changed = sql.SQL("({}) IS DISTINCT FROM ({})").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(_id(c)) for c in non_key) if non_key else sql.SQL("NULL"),
        sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(_id(c)) for c in non_key) if non_key else sql.SQL("NULL"))
    sets = [sql.SQL("{c} = EXCLUDED.{c}").format(c=_id(c)) for c in non_key]
    sets.append(sql.SQL("{v} = EXCLUDED.{v}").format(v=_id(VERSION_COLUMN)))
    if REPROCESS_COLUMN in receiver_cols:
        sets.append(sql.SQL("{r} = CASE WHEN {changed} THEN false ELSE t.{r} END").format(
            r=_id(REPROCESS_COLUMN), changed=changed))
    if manifest.kind == "complete":
        return _merge_complete(conn, info, stage, cols, non_key, manifest, receiver_cols)
    # Partials refresh the version of every row they carry, changed or not, so an older
    # backup arriving later can't win (a complete's rows are guarded by supersession).
    query = sql.SQL(
        "INSERT INTO {t} AS t ({cols}, {v}) SELECT {cols}, %(snap)s FROM {s} "
        "ON CONFLICT ({pk}) DO UPDATE SET {sets} WHERE t.{v} IS NULL OR t.{v} < EXCLUDED.{v}").format(
        t=_id(info.name), cols=_ids(cols), v=_id(VERSION_COLUMN), s=_id(stage), pk=_ids(info.primary_key),
        sets=sql.SQL(", ").join(sets))
    cur = conn.execute(query, {"snap": manifest.snapshot_time})
    return cur.rowcount


def _merge_complete(conn, info, stage: str, cols, non_key, manifest: Manifest, receiver_cols) -> int:
    """Whole tables: one MERGE over a hash join, writing only rows that changed, costs
    far less than probing the primary key once per row (PostgreSQL 15+)."""
    conn.execute(sql.SQL("ANALYZE {}").format(_id(stage)))
    match = sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=_id(c)) for c in info.primary_key)
    update = sql.SQL("")
    if non_key:
        differs = sql.SQL("({}) IS DISTINCT FROM ({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(_id(c)) for c in non_key),
            sql.SQL(", ").join(sql.SQL("s.{}").format(_id(c)) for c in non_key))
        sets = [sql.SQL("{c} = s.{c}").format(c=_id(c)) for c in non_key]
        sets.append(sql.SQL("{v} = %(snap)s").format(v=_id(VERSION_COLUMN)))
        if REPROCESS_COLUMN in receiver_cols:
            sets.append(sql.SQL("{} = false").format(_id(REPROCESS_COLUMN)))
        update = sql.SQL("WHEN MATCHED AND (t.{v} IS NULL OR t.{v} < %(snap)s) AND {differs} THEN UPDATE SET {sets} "
                         ).format(v=_id(VERSION_COLUMN), differs=differs, sets=sql.SQL(", ").join(sets))
    return conn.execute(sql.SQL(
        "MERGE INTO {t} t USING {s} s ON {match} {update}"
        "WHEN NOT MATCHED THEN INSERT ({cols}, {v}) VALUES ({scols}, %(snap)s)").format(
        t=_id(info.name), s=_id(stage), match=match, update=update, cols=_ids(cols), v=_id(VERSION_COLUMN),
        scols=sql.SQL(", ").join(sql.SQL("s.{}").format(_id(c)) for c in cols)),
        {"snap": manifest.snapshot_time}).rowcount


def _delete_absent(conn, info, stage: str, manifest: Manifest) -> int:
    """Rows the complete's snapshot doesn't have, and that no newer backup wrote, are gone on the sender."""
    match = sql.SQL(" AND ").join(sql.SQL("s.{c} = t.{c}").format(c=_id(c)) for c in info.primary_key)
    cur = conn.execute(sql.SQL(
        "DELETE FROM {t} t WHERE (t.{v} IS NULL OR t.{v} <= %(snap)s) "
        "AND NOT EXISTS (SELECT 1 FROM {s} s WHERE {match})").format(
        t=_id(info.name), v=_id(VERSION_COLUMN), s=_id(stage), match=match), {"snap": manifest.snapshot_time})
    return cur.rowcount


def _advance_sequences(conn, info) -> None:
    """Serial ids: the receiver's sequence ends past the loaded ids (if it ever inserts)."""
    for col in info.primary_key:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (sql.Identifier(info.name).as_string(conn), col)
                           ).fetchone()[0]
        if seq:
            conn.execute(sql.SQL(
                "SELECT setval(%(seq)s, GREATEST(m, (SELECT last_value FROM {seq}))) "
                "FROM (SELECT max({c}) AS m FROM {t}) x WHERE m IS NOT NULL").format(
                seq=sql.SQL(seq), c=_id(col), t=_id(info.name)), {"seq": seq})
