"""Equal ranges of a table's integer key, each summed on both sides of a complete's load:
the receiver's table and the staged table file (load/narrow.py says what for).

Per range: the row count and the sum of pg/rowhash.py's receiver-local row hash over the
columns a load writes, in one pass per side and a few thousand groups. The staged side is
taken by the staging session as the file's digest (load/staging.py): summed over all
ranges it is the file's fingerprint, so it costs no pass of its own.
"""

from __future__ import annotations

import math

from psycopg import sql

from arb_pipeline.load.deletes import VERSION_COLUMN
from arb_pipeline.pg.introspect import INTEGER_KEY_TYPES, TableInfo
from arb_pipeline.pg.rowhash import Fingerprint, canonical_text_settings, fingerprint_of, local_row_hash_sql

RANGES = 4096  # per table: small aggregates; a day of a 60-day table is about 70 ranges
RANGES_PER_SEGMENT_BITS = 6  # a segmented file's ranges: 64 per segment (load/segments.py)


class KeyRanges:
    """``RANGES`` equal ranges of a table's integer key, from its lowest key to its
    highest, plus one below (-1) and one above (``RANGES``); ``columns`` are the ones summed."""

    def __init__(self, info: TableInfo, columns: list[str], low: int, width: int, bits: int | None = None):
        self.info, self.columns, self.low, self.width, self.bits = info, columns, low, width, bits
        self.key = info.primary_key[0]
        self.table: dict[int, tuple[int, int, int]] | None = None  # range -> rows, hash sum, unversioned
        self.staged: dict[int, tuple[int, int]] | None = None  # range -> rows, hash sum

    @staticmethod
    def applies(info: TableInfo) -> bool:
        """A versioned table with a one-column integer key."""
        return (
            VERSION_COLUMN in info.column_names
            and len(info.primary_key) == 1
            and info.column(info.primary_key[0]).type in INTEGER_KEY_TYPES
        )

    @classmethod
    def aligned(cls, info: TableInfo, columns: list[str], segment_bits: int) -> KeyRanges | None:
        """Ranges of ``1 << bits`` keys, ``1 << RANGES_PER_SEGMENT_BITS`` of them to a segment of a
        segmented table file (range number: the key shifted right by ``bits``)."""
        if not cls.applies(info):
            return None
        return cls(info, columns, 0, 0, max(0, segment_bits - RANGES_PER_SEGMENT_BITS))

    @classmethod
    def of(cls, conn, info: TableInfo, columns: list[str]) -> KeyRanges | None:
        """The table's key ranges, or None: not one integer key, no version column, or empty."""
        if not cls.applies(info):
            return None
        ends = sql.SQL("SELECT min({k}), max({k}) FROM {t}")  # both read off the key's index
        key, table = sql.Identifier(info.primary_key[0]), sql.Identifier(info.name)
        low, high = conn.execute(ends.format(k=key, t=table)).fetchone()
        if low is None:
            return None
        return cls(info, columns, low, max(1, math.ceil((high - low + 1) / RANGES)))

    def of_key(self, alias: str) -> sql.Composable:
        """The range number of ``alias``'s key."""
        k = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(self.key))
        if self.bits is not None:
            return sql.SQL("({k}::bigint >> {b})").format(k=k, b=sql.Literal(self.bits))
        number = sql.SQL("(CASE WHEN {k} < {lo} THEN -1 ELSE LEAST(({k}::bigint - {lo}) / {w}, {n}) END)")
        return number.format(k=k, lo=sql.Literal(self.low), w=sql.Literal(self.width), n=sql.Literal(RANGES))

    def _sums(self, conn, relation: sql.Composable, alias: str, extra=sql.SQL("")) -> list[tuple]:
        row_hash = local_row_hash_sql(self.columns, [self.info.column(c).type for c in self.columns], alias)
        with canonical_text_settings(conn):  # columns hashed as text are written alike on both sides
            return conn.execute(
                sql.SQL("SELECT {r}, count(*), sum({h}){x} FROM {rel} {a} GROUP BY 1").format(
                    r=self.of_key(alias), h=sql.SQL(row_hash), x=extra, rel=relation, a=sql.Identifier(alias)
                )
            ).fetchall()

    def take_staged(self, conn, stage: sql.Identifier, same_as_table=()) -> Fingerprint:
        """Sum the staged rows' ranges, and take the ranges ``same_as_table`` (segments not
        staged because the table holds their rows, load/segments.py) as the table's; returns
        the fingerprint of them all (rowhash's local one)."""
        self.staged = {r: (n, int(h)) for r, n, h in self._sums(conn, stage, "s")}
        for r in same_as_table:
            assert r not in self.staged, "a range both staged and taken from the table"
            if r in self.table:
                self.staged[r] = self.table[r][:2]
        return fingerprint_of(
            sum(n for n, _ in self.staged.values()), sum(h for _, h in self.staged.values())
        )

    def take_table(self, conn) -> int:
        """Sum the table's ranges (once); returns its row count."""
        if self.table is None:
            unversioned = sql.SQL(", count(*) FILTER (WHERE t.{} IS NULL)").format(
                sql.Identifier(VERSION_COLUMN)
            )
            rows = self._sums(conn, sql.Identifier(self.info.name), "t", unversioned)
            self.table = {r: (n, int(h), u) for r, n, h, u in rows}
        return sum(n for n, _, _ in self.table.values())

    def numbers_of(self, segment) -> range:
        """The (aligned) ranges of a segment of a segmented table file."""
        return range(segment.key_low >> self.bits, (segment.key_high >> self.bits) + 1)

    def misplaced(self, segments) -> tuple | None:
        """The first of the staged ``segments`` whose staged rows are not all in its key
        range, with how many are, or None."""
        for seg in segments:
            numbers = self.numbers_of(seg)
            rows = self.summed(self.staged, numbers.start, numbers.stop - 1)[0]
            if rows != seg.rows:
                return seg, rows
        return None

    def summed(self, side: dict, first: int, last: int) -> tuple[int, int, int]:
        """Rows, hash sum and (table side) unversioned rows of ranges ``first`` to ``last``."""
        parts = [side[r] for r in range(first, last + 1) if r in side]
        return (
            sum(p[0] for p in parts),
            sum(p[1] for p in parts),
            sum(p[2] for p in parts if len(p) > 2),
        )

    def differing(self) -> list[int]:
        """The ranges whose staged rows may differ from the table's: counts or sums differ,
        or the table has rows there no backup wrote (a complete claims them)."""
        assert self.staged is not None, "take_staged first"
        return [
            r
            for r, summed in self.staged.items()
            if self.table.get(r, (-1, 0, 0))[:2] != summed or self.table[r][2]
        ]

    def staged_rows(self, ranges) -> int:
        return sum(self.staged[r][0] for r in ranges)
