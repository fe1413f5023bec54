"""Staging a backup's table files in the receiver's database, typed by the receiver.

A staging table's columns take the receiver's own types (from its catalog); a column
the receiver lacks is staged as text and ignored later. No type name, and no SQL, from
the backup is ever executed. Partials stage into temporary tables inside their load
transaction; completes stage whole tables into UNLOGGED tables of schema ``arb_stage``
from parallel sessions, before the one transaction that merges them.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import psycopg
from psycopg import sql

from arb_pipeline import settings
from arb_pipeline.errors import ArbError
from arb_pipeline.fsutil import LineTooLongError
from arb_pipeline.load.failures import backup_at_fault, server_message
from arb_pipeline.load.segments import segments_held
from arb_pipeline.ops.disk_guard import DiskFloor
from arb_pipeline.package.limits import MB
from arb_pipeline.package.manifest import FileEntry
from arb_pipeline.package.reader import iter_table_chunks
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import ident_list
from arb_pipeline.pg.rowhash import Fingerprint, canonical_text_settings, local_fingerprint

if TYPE_CHECKING:
    from arb_pipeline.load.key_ranges import KeyRanges

log = logging.getLogger(__name__)
STAGING_SCHEMA = "arb_stage"
FLOOR_EVERY = 64 * 1024 * 1024  # bytes staged between two checks of the disk floor


class StagingError(ArbError):
    pass


class MalformedFileError(StagingError):
    """A table file's rows can't be read as the receiver's column types (after verification:
    the backup is bad, every retry would fail the same way)."""

    backup_at_fault = True


@dataclass
class TableLoad:
    table: str
    rows_in_backup: int
    rows_written: int = 0
    rows_deleted: int = 0
    rows_owned: int = 0  # before a complete's deletes: rows a backup wrote (all rows, if mirror)
    ignored_columns: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)  # stage / merge / delete / digest
    # A complete's table file as staged (typed by the receiver): row count and receiver-local
    # digest (pg/rowhash.py) of its columns in the file's order, what the check after the load
    # compares the table with when the manifest carries no sender digest (load/checks.py).
    fingerprint: Fingerprint | None = None
    # A complete's staged rows narrowed to those its merge acts on (load/narrow.py), and
    # how many staged rows narrowing compared with the table row by row (the rest agreed
    # by key range).
    changes: sql.Identifier | None = None
    rows_compared: int | None = None
    changed_keys: tuple | None = None  # lowest and highest key of the narrowed rows (one-column keys)
    key_ranges: KeyRanges | None = None  # the table's, summed on the staged side as the digest
    held_segments: tuple = ()  # segments of the file not staged: the table holds them (load/segments.py)


def stage_table(
    conn,
    backup_dir: Path,
    entry: FileEntry,
    info,
    stage: sql.Identifier,
    *,
    temporary: bool,
    floor: DiskFloor | None = None,
    fingerprint: bool = False,
    key_ranges: KeyRanges | None = None,
    held: tuple = (),
) -> TableLoad:
    """COPY one table file into a new staging table; check the row count (and, with
    ``floor``, the free disk space every FLOOR_EVERY bytes and after the table). With
    ``fingerprint``, the staged rows' row count and receiver-local digest (rowhash) are in the result, unless
    the manifest entry carries the sender's own digest (the check uses that one); with
    ``key_ranges`` over the file's columns, that digest is summed by key range on the way.
    ``held``: segments of the file not staged, whose ranges the table holds (load/segments.py)."""
    t0 = time.perf_counter()
    receiver_types = {c.name: c.type for c in info.columns}
    backup_cols = [c.name for c in entry.columns]
    ignored = tuple(c for c in backup_cols if c not in receiver_types)
    missing_pk = [c for c in info.primary_key if c not in backup_cols]
    if missing_pk:
        raise StagingError(
            f"backup file {entry.name} lacks primary key column(s) {missing_pk} of {entry.table}"
        )
    coldefs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(receiver_types.get(c, "text")))
        for c in backup_cols
    )
    create = sql.SQL(
        "CREATE TEMP TABLE {} ({}) ON COMMIT DROP" if temporary else "CREATE UNLOGGED TABLE {} ({})"
    )
    path = Path(backup_dir) / entry.name
    try:
        conn.execute(create.format(stage, coldefs))
        copy_in(conn, path, entry, stage, backup_cols, floor, held)
    except LineTooLongError as exc:  # verification bounds lines: the file changed since
        raise MalformedFileError(
            f"backup file {entry.name} (table {entry.table}): {exc} ({settings.MAX_ROW_MB.name}); "
            "the file is malformed: re-run the sender's partition to publish the backup again"
        ) from None
    except psycopg.Error as exc:  # a value the receiver's column type can't take, or not JSON
        if not backup_at_fault(exc):
            raise
        diag = exc.diag
        where = f" ({diag.context.strip().splitlines()[0][:300]})" if diag.context else ""
        raise MalformedFileError(
            f"backup file {entry.name} (table {entry.table}): a row can't be read as the receiver's "
            f"column types: {server_message(exc)}{where}; the file is "
            "malformed: re-run the sender's partition to publish the backup again"
        ) from exc
    if floor:
        floor.check()
    t1 = time.perf_counter()
    digest = None
    # Count and digest in one pass, by key range where there are ranges over the file's columns.
    by_ranges = key_ranges is not None and key_ranges.columns == backup_cols
    if by_ranges and (entry.segments or fingerprint and entry.fingerprint is None):
        digest = key_ranges.take_staged(conn, stage, [r for seg in held for r in key_ranges.numbers_of(seg)])
        count = digest.rows
        misplaced = key_ranges.misplaced([seg for seg in entry.segments if seg not in held])
        # else its rows could fall in a held range (neither compared nor kept from deletion), or
        # be recorded as another frame's digest (load/segments.py)
        if misplaced:
            seg, rows = misplaced
            raise MalformedFileError(
                f"backup file {entry.name} (table {entry.table}): its segment of keys {seg.key_low} to "
                f"{seg.key_high} holds {seg.rows} rows, {rows} of them in that range; the file is "
                "malformed: re-run the sender's complete partition to publish the backup again"
            )
    elif fingerprint and entry.fingerprint is None:
        with canonical_text_settings(conn):
            digest = local_fingerprint(
                conn,
                stage.as_string(conn),
                backup_cols,
                [receiver_types.get(c, "text") for c in backup_cols],
            )
        count = digest.rows
    else:
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()[0]
    if count != entry.rows:
        raise MalformedFileError(f"{entry.name}: staged {count} rows but the manifest says {entry.rows}")
    if ignored:
        log.warning(
            "%s: column(s) %s exist on the sender but not on the receiver; they are not loaded "
            "(add them with a receiver migration; the next complete backup fills them)",
            entry.table,
            ", ".join(ignored),
        )
    load = TableLoad(
        entry.table,
        count,
        ignored_columns=ignored,
        seconds={"stage": t1 - t0},
        key_ranges=key_ranges,
        held_segments=tuple(held),
    )
    if digest is not None:
        load.fingerprint = digest
        load.seconds["digest"] = time.perf_counter() - t1
    return load


def copy_in(
    conn,
    path: Path,
    entry: FileEntry,
    stage: sql.Identifier,
    backup_cols: list[str],
    floor: DiskFloor | None,
    held: tuple = (),
) -> None:
    max_line = int(settings.MAX_ROW_MB.read() * MB)
    wanted = [s for s in entry.segments if s not in held] if held else None
    chunks = iter_table_chunks(path, max_line=max_line, segments=wanted)
    if floor:
        chunks = _checking_floor(chunks, floor)
    with conn.cursor() as cur:
        if entry.format == "copy-text":
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, ident_list(backup_cols))) as copy:
                for chunk in chunks:
                    copy.write(chunk)
        else:  # jsonl: one JSON object per line, decoded by the server into the staging row type
            docs = sql.Identifier(f"{stage.as_string(conn).strip(chr(34)).split('.')[-1]}_doc")
            conn.execute(sql.SQL("CREATE TEMP TABLE {} (doc json) ON COMMIT DROP").format(docs))
            with cur.copy(sql.SQL("COPY {} (doc) FROM STDIN").format(docs)) as copy:
                for chunk in chunks:
                    copy.write(chunk.replace(b"\\", b"\\\\"))  # COPY text format unescapes backslashes
            _check_row_keys(conn, docs, entry, backup_cols)
            conn.execute(
                sql.SQL("INSERT INTO {s} SELECT r.* FROM {d}, json_populate_record(NULL::{s}, doc) r").format(
                    s=stage, d=docs
                )
            )


def _checking_floor(chunks: Iterator[bytes], floor: DiskFloor) -> Iterator[bytes]:
    """``chunks`` as they are, checking the disk floor every FLOOR_EVERY bytes (a statvfs each)."""
    since = 0
    for chunk in chunks:
        since += len(chunk)
        if since >= FLOOR_EVERY:
            floor.check()
            since = 0
        yield chunk


def _check_row_keys(conn, docs: sql.Identifier, entry: FileEntry, backup_cols: list[str]) -> None:
    """Every JSON row has exactly the manifest's columns: a missing key would load as NULL over
    a real value, and a row of another table with compatible columns would load silently."""
    # One pass of json_object_keys per row counts distinct expected keys and all keys (packed in one bigint:
    # a row, under PostgreSQL's 1 GB, has fewer than 2^32 keys); both must equal n. The first
    # bad row, if any, is then described on its own.
    bad = conn.execute(
        sql.SQL(
            "SELECT ctid FROM {d} WHERE CASE WHEN json_typeof(doc) = 'object' THEN (SELECT "
            "count(DISTINCT k) FILTER (WHERE k = ANY(%(cols)s::text[])) * 4294967296 + count(*) "
            "FROM json_object_keys(doc) k) END IS DISTINCT FROM %(n)s * 4294967297 ORDER BY ctid LIMIT 1"
        ).format(d=docs),
        {"n": len(backup_cols), "cols": backup_cols},
    ).fetchone()
    if bad is None:
        return
    ctid = bad[0]
    line, keys = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) + 1 FROM {d} WHERE ctid < %(t)s::tid), CASE WHEN "
            "json_typeof(doc) = 'object' THEN ARRAY(SELECT json_object_keys(doc)) END "
            "FROM {d} WHERE ctid = %(t)s::tid"
        ).format(d=docs),
        {"t": ctid},
    ).fetchone()
    if keys is None:
        what = "is not a JSON object"
    else:
        missing = [c for c in backup_cols if c not in keys]
        extra = sorted({k for k in keys if k not in backup_cols})
        twice = sorted({k for k in keys if keys.count(k) > 1})
        what = "; ".join(
            f"{label} column(s) {', '.join(map(repr, names))}"
            for label, names in (("lacks", missing), ("has unexpected", extra), ("repeats", twice))
            if names
        )
    raise MalformedFileError(
        f"backup file {entry.name} (table {entry.table}): line {line} {what}: every row must have "
        "exactly the manifest's columns for its table; the file is malformed: re-run the sender's "
        "partition to publish the backup again"
    )


def stage_name(backup_key: str, i: int, suffix: str = "") -> sql.Identifier:
    return sql.Identifier(STAGING_SCHEMA, f"s_{backup_key}_{i}{suffix}")


def clear_staging(conn) -> None:
    """Drop staging tables a killed load left behind (caller holds the load lock)."""
    for (name,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s", (STAGING_SCHEMA,)
    ).fetchall():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STAGING_SCHEMA, name)))


def stage_in_parallel(
    dsn: str,
    backup_dir: Path,
    entries: dict[str, FileEntry],
    infos: dict,
    order: list[str],
    backup_key: str,
    workers: int = 2,
    floor: DiskFloor | None = None,
    fingerprint: bool = False,
    then: Callable | None = None,
    key_ranges: dict[str, KeyRanges] | None = None,
) -> dict[str, tuple[sql.Identifier, TableLoad]]:
    """Stage every table of a complete into UNLOGGED tables, ``workers`` sessions at a time;
    with ``fingerprint``, each table whose manifest entry carries no sender digest is
    digested as staged (by its ``key_ranges``, if any). ``then(conn, entry, info, stage,
    scratch, load)`` runs in the session after each table is staged (``scratch``: a free
    name in the staging schema)."""

    def one(item):
        i, table = item
        name = stage_name(backup_key, i)
        ranges = (key_ranges or {}).get(table)
        with connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            held = segments_held(conn, entries[table], ranges) if ranges is not None else []
            t_held = time.perf_counter() - t0
            load = stage_table(
                conn,
                backup_dir,
                entries[table],
                infos[table],
                name,
                temporary=False,
                floor=floor,
                fingerprint=fingerprint,
                key_ranges=ranges,
                held=tuple(held),
            )
            if entries[table].segments:
                load.seconds["held"] = t_held  # the table's key ranges summed, frames looked up
            if then:
                then(conn, entries[table], infos[table], name, stage_name(backup_key, i, "_c"), load)
                if floor:
                    floor.check()
            return table, (name, load)

    # Largest files first, so the two sessions finish together.
    items = sorted(enumerate(order), key=lambda it: -entries[it[1]].bytes)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, items))
