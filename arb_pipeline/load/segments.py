"""Staging fewer bytes: a segmented table file's frames the receiver already holds are not staged.

A complete's large tables come cut by key range, one zstd frame per range, in key order
(extract/segments.py); an unchanged range compresses to the same frame, with the same
sha256. When a load stages a frame, it records the frame's digest as the receiver types
it, keyed by the frame's sha256 and the columns and types it was summed over
(``arb_segment_digest``): the row count and summed row hash of its rows, the same sums
load/key_ranges.py takes of the table. A later complete's frame with a recorded sha256
is not staged when the table's rows in that key range add up to exactly the recorded
digest, every one of them versioned: the table holds those rows already, so the merge
would write none of them and the delete would find none absent. Its ranges' sums are
then taken from the table (the digest is the file's, recorded from the staged rows, and
the check after the load compares the table with the sum of all ranges, as before).

A frame whose sha256 is new (its rows changed), or whose range on the receiver changed
since (a partial wrote a row there, a row was deleted by hand), is staged and compared as
any table file is. The recorded digests are pruned to the newest complete's frames.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from arb_pipeline.load.key_ranges import KeyRanges
from arb_pipeline.package.manifest import FileEntry, Segment

DIGESTS = "arb_segment_digest"


def columns_signature(ranges: KeyRanges) -> str:
    """What a recorded digest was summed over: the columns and the receiver's types of them."""
    text = ",".join(f"{c} {ranges.info.column(c).type}" for c in ranges.columns)
    return hashlib.sha256(text.encode()).hexdigest()


def segments_held(conn, entry: FileEntry, ranges: KeyRanges) -> list[Segment]:
    """The file's segments the table already holds (not to be staged). Sums the table's
    ranges (narrowing reuses them)."""
    if not entry.segments or ranges.bits is None or ranges.columns != [c.name for c in entry.columns]:
        return []
    recorded = {
        sha: (rows, int(total))
        for sha, rows, total in conn.execute(
            sql.SQL("SELECT sha256, rows, hash_sum FROM {} WHERE sha256 = ANY(%s) AND columns = %s").format(
                sql.Identifier(DIGESTS)
            ),
            ([s.sha256 for s in entry.segments], columns_signature(ranges)),
        ).fetchall()
    }
    if not recorded:
        return []
    ranges.take_table(conn)
    held = []
    for seg in entry.segments:
        numbers = ranges.numbers_of(seg)
        rows, total, unversioned = ranges.summed(ranges.table, numbers.start, numbers.stop - 1)
        if recorded.get(seg.sha256) == (seg.rows, total) and rows == seg.rows and not unversioned:
            held.append(seg)
    return held


def record_digests(conn, backup_id: str, loads: list, entries: dict[str, FileEntry]) -> None:
    """In the load's transaction: record the digest of every segment of the complete (staged
    ones from their staged sums, held ones are already recorded) and forget the others."""
    rows = []
    for load in loads:
        ranges, entry = load.key_ranges, entries[load.table]
        if ranges is None or ranges.staged is None or not entry.segments:
            continue
        if ranges.columns != [c.name for c in entry.columns]:
            continue
        signature = columns_signature(ranges)
        for seg in entry.segments:
            numbers = ranges.numbers_of(seg)
            count, total, _ = ranges.summed(ranges.staged, numbers.start, numbers.stop - 1)
            rows.append((seg.sha256, signature, count, total, backup_id))
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (sha256, columns, rows, hash_sum, backup_id) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (sha256, columns) DO UPDATE SET backup_id = EXCLUDED.backup_id"
            ).format(sql.Identifier(DIGESTS)),
            rows,
        )
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE backup_id <> %s").format(sql.Identifier(DIGESTS)), (backup_id,)
    )
