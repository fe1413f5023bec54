"""Narrowing a complete's staged table to the rows its MERGE acts on (load/merge.py).

A complete's merge is one MERGE over a hash join of the staged table with the table,
inside the load's transaction, on one core. Most rows of a daily complete are already on
the receiver as they are, so each staging session first copies aside only the rows the
MERGE would act on: new rows, changed rows the complete is newer than, and rows no backup
wrote yet. This runs on both cores, outside the transaction. It holds because between
staging and the merge only this load writes the sender's columns of replicated tables: it
holds the load lock from before staging to its commit, and so does every other load;
postprocessing writes receiver-only columns only (and under the same lock). Rows no backup
wrote, the only ones ``arb adopt --prune-unshipped`` deletes, always stay in, so a prune
meanwhile ends as it would without narrowing. The staged table itself stays whole: the
deletes and the check compare the table with it.

Comparing every row costs a hash join of both whole tables; for the largest tables that
cost as much as staging them (millions of wide rows hashed, spilling to disk). So a table
keyed by one integer column is compared by key range first (load/key_ranges.py): a range
whose row count and summed row hash agree on both sides, with every row on the receiver
versioned, holds the same rows, so the MERGE would act on none of them. Only the ranges
that differ are compared row by row, on both sides. A daily complete of append-mostly
telemetry differs in its newest range and past the table's last key only. Tables keyed
otherwise, and tables whose differing ranges hold most of the rows (a bulk update touching
every range), are compared row by row whole. A segmented file's ranges are aligned to its
segments, and the segments the receiver already holds are not even staged: their ranges'
sums are the table's (load/segments.py).
"""

from __future__ import annotations

import time

from psycopg import sql

from arb_pipeline.load.deletes import COMPLETE_IS_NEWER, VERSION_COLUMN
from arb_pipeline.load.key_ranges import KeyRanges
from arb_pipeline.load.merge import LOAD_MEMORY, written_columns
from arb_pipeline.load.staging import TableLoad
from arb_pipeline.package.manifest import FileEntry
from arb_pipeline.pg.introspect import TableInfo
from arb_pipeline.pg.quote import key_match


def key_ranges(conn, files: list[FileEntry], infos: dict[str, TableInfo]) -> dict[str, KeyRanges]:
    """Each table's key ranges, for its staging session to sum the staged file by (before
    staging: the load lock keeps the tables as they are until the load commits)."""
    ranges = {}
    for entry in files:
        info, columns = infos[entry.table], written_columns(entry, infos[entry.table])
        if entry.segment_bits is not None:  # ranges aligned to the file's segments (load/segments.py)
            found = KeyRanges.aligned(info, columns, entry.segment_bits)
        else:
            found = KeyRanges.of(conn, info, columns)
        if found is not None:
            ranges[entry.table] = found
    return ranges


def narrow(
    conn,
    entry: FileEntry,
    info: TableInfo,
    stage: sql.Identifier,
    changes: sql.Identifier,
    load: TableLoad,
    *,
    snapshot_time,
    capture_lsn: str | None = None,
) -> None:
    """In a complete's staging session (autocommit, before the load's transaction): copy into
    ``changes`` the staged rows the complete's MERGE would act on, and name it in
    ``load.changes`` for the merge to read instead. A row is left out when the table has
    it with a version and either the complete is not newer or it holds the same values in
    the columns a load writes. Skipped (the merge reads the whole staged table) when the
    table holds fewer than half as many rows as the file: most rows would be copied again."""
    if VERSION_COLUMN not in info.column_names:
        return  # the merge names the missing migration
    t0 = time.perf_counter()
    conn.execute(f"SET work_mem = '{LOAD_MEMORY}'")
    ranges = load.key_ranges
    if ranges is None:
        count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(info.name))
        held = conn.execute(count).fetchone()[0]
    else:
        held = ranges.take_table(conn)
    if held * 2 < load.rows_in_backup:
        return
    only = None  # compare every staged row
    if ranges is not None:
        if ranges.staged is None:  # staging summed another column list (a column the receiver lacks)
            ranges.take_staged(conn, stage)
        only = ranges.differing()
        load.rows_compared = ranges.staged_rows(only)
        if load.rows_compared * 2 > load.rows_in_backup:
            only = None  # most ranges differ: one whole comparison costs less than filtering
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(changes, stage))
    if only is None or only:
        _copy_acted_on(
            conn, info, stage, changes, written_columns(entry, info), snapshot_time, capture_lsn, ranges, only
        )
    if ranges is not None:  # the merge then reads the table's rows between them only, off its key's index
        ends = sql.SQL("SELECT min({k}), max({k}) FROM {c}").format(k=sql.Identifier(ranges.key), c=changes)
        load.changed_keys = conn.execute(ends).fetchone()
    load.changes = changes
    load.seconds["narrow"] = time.perf_counter() - t0


def _copy_acted_on(conn, info, stage, changes, columns, snapshot_time, capture_lsn, ranges, only) -> None:
    """Copy the staged rows the MERGE acts on into ``changes``: all staged rows compared
    with the table row by row, or only those in the key ranges ``only`` (if not None)."""
    non_key = [c for c in columns if c not in info.primary_key]
    same = sql.SQL("true")
    if non_key:  # without non-key columns the MERGE only inserts and claims
        same = sql.SQL("(NOT {newer} OR ({t}) IS NOT DISTINCT FROM ({s}))").format(
            newer=COMPLETE_IS_NEWER,
            t=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in non_key),
            s=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in non_key),
        )
    in_ranges = {"s": sql.SQL("true"), "t": sql.SQL("true")}
    if only is not None:  # on both sides: the table's side then hashes only those ranges' rows
        in_ranges = {a: sql.SQL("{} = ANY(%(only)s::bigint[])").format(ranges.of_key(a)) for a in ("s", "t")}
    conn.execute(
        sql.SQL(
            "INSERT INTO {c} SELECT s.* FROM {s} s WHERE {s_in} AND NOT EXISTS (SELECT 1 FROM {t} t "
            "WHERE {match} AND {t_in} AND t.{v} IS NOT NULL AND {same})"
        ).format(
            c=changes,
            s=stage,
            t=sql.Identifier(info.name),
            s_in=in_ranges["s"],
            t_in=in_ranges["t"],
            match=key_match(info.primary_key),
            v=sql.Identifier(VERSION_COLUMN),
            same=same,
        ),
        {"snap": snapshot_time, "pin": capture_lsn, "only": sorted(only or ())},
    )
