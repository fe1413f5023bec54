"""Segmented table files: a complete's large tables cut by key range, one zstd frame each.

A daily complete of append-mostly tables (telemetry) holds yesterday's rows again, byte
for byte. Dumped in key order and cut at fixed, aligned key ranges, each range compresses
to the same frame as yesterday, with the same sha256; the receiver then knows it staged
those rows before and, if its table still holds them, skips staging the frame
(load/segments.py). The ranges are a power of two keys wide, chosen from the table's
highest key so that a table has about ``SEGMENTS_PER_TABLE`` of them; the width changes
only when the highest key doubles past that, so the cuts stay where they were day after day.

The rows come in key order (``ORDER BY`` the key, which PostgreSQL reads off the key's
index: as fast as a plain COPY on tables whose rows lie in key order, as append-mostly
ones do), so a chunk is cut by looking at a few keys only: the last line's, then a
binary search where a range ends inside the chunk.
"""

from __future__ import annotations

import math

from psycopg import sql

from arb_pipeline.errors import ArbError
from arb_pipeline.package.manifest import Segment
from arb_pipeline.package.writer import FramedTableSink
from arb_pipeline.pg.introspect import INTEGER_KEY_TYPES

SEGMENTS_PER_TABLE = 32
MIN_SEGMENT_BITS = 12  # ranges of at least 4096 keys: a small table is one or a few frames
SEGMENTED_TABLE_BYTES = 32 * 1024 * 1024  # tables smaller than this cost little to stage whole
# Key order is read off the key's index; as cheap as a plain COPY only where the rows lie in
# about key order (append-mostly tables), which PostgreSQL's statistics say (ANALYZE).
MIN_KEY_CORRELATION = 0.9


class SegmentError(ArbError):
    pass


def segment_bits(low: int, high: int) -> int:
    """log2 of the width of a table's segments, from its lowest and highest key."""
    span = max(abs(low), abs(high)) + 1
    return max(MIN_SEGMENT_BITS, (math.ceil(span / SEGMENTS_PER_TABLE) - 1).bit_length())


class SegmentingSink:
    """Writes a table's rows, in key order, into a FramedTableSink: a new frame wherever a
    row's key leaves the current ``1 << bits`` wide range; records the frames as Segments.
    ``key_field`` is the key's position among the file's columns (COPY text format)."""

    def __init__(self, sink: FramedTableSink, bits: int, key_field: int):
        self.sink, self.bits, self.key_field = sink, bits, key_field
        self.segments: list[Segment] = []
        self._current: int | None = None  # the open frame's range number
        self._rows_before = 0
        self._carry = b""  # a row cut at the end of the last chunk

    @property
    def rows(self) -> int:
        return self.sink.rows

    def write_lines(self, data: bytes) -> None:
        data = self._carry + data
        end = data.rfind(b"\n") + 1
        self._carry = data[end:]
        if end:
            self._write_rows(data if end == len(data) else data[:end])

    def close(self) -> None:
        if self._carry:
            raise SegmentError("the table's COPY output ended inside a row")
        if self._current is not None:
            self._end_frame()

    def _range_at(self, rows: bytes, start: int) -> int:
        end = rows.index(b"\n", start)
        fields = rows[start:end].split(b"\t", self.key_field + 1)
        try:
            return int(fields[self.key_field]) >> self.bits
        except (ValueError, IndexError):
            raise SegmentError(f"a row's key is not an integer: {rows[start:end][:80]!r}") from None

    def _write_rows(self, rows: bytes) -> None:
        pos = 0
        while pos < len(rows):
            first = self._range_at(rows, pos)
            if self._current is None or first != self._current:
                if self._current is not None:
                    if first < self._current:
                        raise SegmentError("the table's rows did not come in key order")
                    self._end_frame()
                self._current = first
                self.sink.start_frame()
            last_start = rows.rfind(b"\n", pos, len(rows) - 1) + 1 or pos
            if self._range_at(rows, last_start) == self._current:
                self.sink.write_lines(rows[pos:] if pos else rows)
                return
            cut = self._first_beyond(rows, pos, last_start)
            self.sink.write_lines(rows[pos:cut])
            pos = cut

    def _first_beyond(self, rows: bytes, lo: int, hi: int) -> int:
        """The start of the first row past the current range, between the row at ``lo``
        (in it) and the row at ``hi`` (past it): rows are in key order, so a binary search."""
        while True:
            after_lo = rows.index(b"\n", lo) + 1
            if after_lo >= hi:
                return hi
            mid = rows.rfind(b"\n", after_lo, (lo + hi) // 2) + 1 or after_lo
            mid = max(mid, after_lo)
            if self._range_at(rows, mid) == self._current:
                lo = mid
            else:
                hi = mid

    def _end_frame(self) -> None:
        offset, size, sha256 = self.sink.end_frame()
        low = self._current << self.bits
        self.segments.append(
            Segment(
                key_low=low,
                key_high=low + (1 << self.bits) - 1,
                offset=offset,
                bytes=size,
                rows=self.sink.rows - self._rows_before,
                sha256=sha256,
            )
        )
        self._rows_before = self.sink.rows
        self._current = None


def segmented_tables(conn, infos: dict, relations: dict, shipped: dict) -> dict[str, tuple[int, int]]:
    """The tables to dump segmented, each with its segments' bits and its key's position
    among the shipped columns: plain tables of at least SEGMENTED_TABLE_BYTES with a
    one-column integer key that is shipped, whose rows lie in about key order (by the
    statistics' correlation). Their key's ends are read off its index."""
    correlation = dict(
        conn.execute(
            "SELECT tablename, correlation FROM pg_stats WHERE schemaname = 'public' AND tablename = ANY(%s) "
            "AND attname = ANY(%s)",
            (list(infos), [i.primary_key[0] for i in infos.values() if len(i.primary_key) == 1]),
        ).fetchall()
    )
    out = {}
    for table, info in infos.items():
        size, relkind = relations[table]
        names = [c.name for c in shipped[table]]
        if size < SEGMENTED_TABLE_BYTES or relkind != "r" or len(info.primary_key) != 1:
            continue
        key = info.primary_key[0]
        if info.column(key).type not in INTEGER_KEY_TYPES or key not in names:
            continue
        if abs(correlation.get(table) or 0) < MIN_KEY_CORRELATION:
            continue  # key order would cost the production server random reads, or a sort
        ends = sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(
            k=sql.Identifier(key), t=sql.Identifier(table)
        )
        low, high = conn.execute(ends).fetchone()
        if low is not None:
            out[table] = (segment_bits(low, high), names.index(key))
    return out
