"""The row hash and table fingerprint both servers compute identically.

Parity (ops/parity.py), the sender's manifest digests (extract/), the receiver's load
checks (load/checks.py), the restore's parity and the drill all judge tables by these.

The row hash (``ROW_HASH_ALGORITHM``)
-------------------------------------
``md5(convert_to(ROW(c1, c2, ...)::text, 'UTF8'))`` with the columns in the given order,
evaluated under pinned session settings (``CANONICAL_SETTINGS``). The composite-record
text is PostgreSQL's own unambiguous row syntax: a NULL is *nothing* between the commas
while an empty string is ``""``, and any value holding a comma, quote, backslash,
parenthesis or whitespace (newlines included) is quoted with escapes, so no two
different rows share a text. Each value is rendered by its type's output function, the
same function ``COPY`` uses, so the text is exactly what the pipeline ships. Output
functions of timestamptz, float8 and friends depend on session settings, which is why
those are pinned: UTC, ISO dates and shortest-round-trip floats (PostgreSQL >= 12) give
the same text on any server. ``convert_to(..., 'UTF8')`` makes the hashed bytes
independent of the database encoding.

The table fingerprint
---------------------
The row count and a digest that sums (never xors: two equal rows must not cancel) the
first 64 bits of each row's md5 read as a signed bigint, in ``numeric`` so nothing
overflows, reported modulo 2^64 as 16 hex digits. A sum is independent of row order, so
the digest depends only on the data and the column list, and one side can compute it
alone: the sender can record it in a backup manifest (together with the column list!)
for the receiver to check later. Equal fingerprints mean equal tables (up to a 2^-64
chance), and no row crosses the network.

The receiver-local fingerprint (``LOCAL_HASH_ALGORITHM``)
---------------------------------------------------------
When both digests are taken on the same server with the same column types (the load
digests a complete's staged table files, the check after it the loaded tables), no text
needs to be canonical: ``local_fingerprint`` sums ``hash_record_extended`` of the row, the
types' own binary hash functions, about a quarter of the md5 digest's cost. Columns of a
type outside ``VALUE_HASHED_TYPES`` (json, geometry, arrays, ...: some have no hash
function) are hashed as their canonical text. Values equal by their type's equality hash
alike (float ``0`` and ``-0``); two values with different text never compare equal under
these types otherwise. Never written to a manifest: the algorithm is not the sender's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from arb_pipeline.errors import ArbError, SchemaError
from arb_pipeline.pg.connect import describe_dsn
from arb_pipeline.pg.quote import quote_ident

SCHEMA = "public"  # the schema of the app's tables, the ones fingerprinted and compared

ROW_HASH_ALGORITHM = "sum64(md5(convert_to(ROW(columns)::text,'UTF8'))) mod 2^64, canonical settings v1"
LOCAL_HASH_ALGORITHM = "sum64(hash_record_extended(ROW(columns), 0)) mod 2^64, receiver-local v1"
# Types (format_type() without a modifier) hashed by value in a local fingerprint; others as text.
VALUE_HASHED_TYPES = frozenset(
    {
        "smallint",
        "integer",
        "bigint",
        "boolean",
        "text",
        "character varying",
        "character",
        "uuid",
        "date",
        "timestamp with time zone",
        "timestamp without time zone",
        "double precision",
        "real",
        "bytea",
    }
)

# Session settings that change how values are written as text. Pinned so a fingerprint
# depends on the data only, whatever the server's or the role's defaults are.
CANONICAL_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
}


class FingerprintError(ArbError):
    """A fingerprint can't be computed as asked (not: two fingerprints differ)."""


@dataclass(frozen=True)
class Fingerprint:
    """Row count and order-independent digest of some columns of a table."""

    rows: int
    digest: str
    algorithm: str = ROW_HASH_ALGORITHM

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "digest": self.digest}


def qualified_table(table: str) -> str:
    """``"public"."<table>"``, quoted, for SQL written as text."""
    return quote_ident(SCHEMA, table)


def _row_text_sql(columns: Sequence[str], alias: str = "t") -> str:
    """The canonical row text expression; one definition shared by digest, stream and detail."""
    if not columns:
        raise FingerprintError("no columns to compare: pass at least one column name")
    return "ROW(" + ", ".join(f"{alias}.{quote_ident(c)}" for c in columns) + ")::text"


def row_hash_sql(columns: Sequence[str], alias: str = "t") -> str:
    """The row hash expression (``ROW_HASH_ALGORITHM``) over ``alias``'s columns."""
    return f"md5(convert_to({_row_text_sql(columns, alias)}, 'UTF8'))"


def _check_server(conn: psycopg.Connection) -> None:
    """Floats are written shortest-round-trip only since PostgreSQL 12; older text differs."""
    version = conn.info.server_version
    if version < 120000:
        raise SchemaError(
            f"PostgreSQL {version // 10000} at {describe_dsn(conn.info.dsn)} is too old for parity "
            "fingerprints: float text is only canonical from version 12. Upgrade the server."
        )


def pin_canonical_settings(conn: psycopg.Connection) -> None:
    """Set ``CANONICAL_SETTINGS`` for the rest of a connection this code owns."""
    _check_server(conn)
    for name, value in CANONICAL_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


@contextmanager
def canonical_text_settings(conn: psycopg.Connection) -> Iterator[None]:
    """Pin ``CANONICAL_SETTINGS`` on a caller's connection for the block, then put them back.

    ``set_config(..., false)`` follows the transaction: if the caller's transaction is
    rolled back, PostgreSQL undoes the change itself, so nothing is restored then.
    """
    _check_server(conn)
    names = list(CANONICAL_SETTINGS)
    current = conn.execute("SELECT " + ", ".join("current_setting(%s)" for _ in names), names).fetchone()
    changed = {n: old for n, old in zip(names, current, strict=True) if old != CANONICAL_SETTINGS[n]}
    for name in changed:
        conn.execute("SELECT set_config(%s, %s, false)", (name, CANONICAL_SETTINGS[name]))
    try:
        yield
    finally:
        if changed and not conn.closed and conn.info.transaction_status != pq.TransactionStatus.INERROR:
            for name, old in changed.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, old))


def table_fingerprint(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str] = (),
) -> Fingerprint:
    """Row count and digest of ``columns`` (in that order) of ``public.<table>``, computed on the server.

    Runs inside the caller's transaction, so a sender can fingerprint the very snapshot
    it dumps. ``key_columns`` are only checked to be among ``columns``: a fingerprint
    that leaves out the key could not tell which row moved where.
    """
    columns = list(columns)
    missing_keys = [k for k in key_columns if k not in columns]
    if missing_keys:
        raise FingerprintError(
            f"key column(s) {', '.join(missing_keys)} of {table} are not among the fingerprinted "
            "columns: include the primary key in the column list"
        )
    with canonical_text_settings(conn):
        try:
            return relation_fingerprint(conn, qualified_table(table), columns)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise SchemaError(
                f"cannot fingerprint {table} ({', '.join(columns)}) at {describe_dsn(conn.info.dsn)}: "
                f"{str(exc).strip().splitlines()[0]}. Check the table and column names, "
                "or run `arb migrate` on that database."
            ) from exc


def relation_fingerprint(
    conn: psycopg.Connection,
    relation_sql: str,
    columns: Sequence[str],
    where_sql: str = "",
    params: Sequence[Any] = (),
) -> Fingerprint:
    """``table_fingerprint`` of any relation (``relation_sql`` is trusted SQL text, e.g. a
    quoted temporary table), aliased ``t``, optionally restricted by ``where_sql``.
    The caller pins ``CANONICAL_SETTINGS`` (``canonical_text_settings``)."""
    where = f" WHERE {where_sql}" if where_sql else ""
    sql = (
        "SELECT count(*), coalesce(sum(('x' || left(h, 16))::bit(64)::bigint), 0) "
        f"FROM (SELECT {row_hash_sql(columns)} AS h FROM {relation_sql} t{where}) s"
    )
    return _aggregate(conn, sql, params, ROW_HASH_ALGORITHM)


def local_fingerprint(
    conn: psycopg.Connection,
    relation_sql: str,
    columns: Sequence[str],
    types: Sequence[str],
    where_sql: str = "",
    params: Sequence[Any] = (),
) -> Fingerprint:
    """``relation_fingerprint`` by ``LOCAL_HASH_ALGORITHM``: ``types`` are the columns'
    ``format_type()`` names, in order; only comparable with another local fingerprint of
    the same columns and types on this server. The caller pins ``CANONICAL_SETTINGS``."""
    where = f" WHERE {where_sql}" if where_sql else ""
    sql = (
        f"SELECT count(*), coalesce(sum({local_row_hash_sql(columns, types)}), 0) "
        f"FROM {relation_sql} t{where}"
    )
    return _aggregate(conn, sql, params, LOCAL_HASH_ALGORITHM)


def local_row_hash_sql(columns: Sequence[str], types: Sequence[str], alias: str = "t") -> str:
    """The row hash of ``LOCAL_HASH_ALGORITHM`` (a bigint) over ``alias``'s columns, whose
    ``format_type()`` names are ``types``, in order."""
    if not columns:
        raise FingerprintError("no columns to compare: pass at least one column name")
    values = ", ".join(
        f"{alias}.{quote_ident(c)}{'' if ty.split('(')[0] in VALUE_HASHED_TYPES else '::text'}"
        for c, ty in zip(columns, types, strict=True)
    )
    return f"hash_record_extended(ROW({values}), 0)"


def _aggregate(conn: psycopg.Connection, sql: str, params: Sequence[Any], algorithm: str) -> Fingerprint:
    rows, total = conn.execute(sql, tuple(params) if params else None).fetchone()
    return fingerprint_of(rows, total, algorithm)


def fingerprint_of(rows: int, total, algorithm: str = LOCAL_HASH_ALGORITHM) -> Fingerprint:
    """The fingerprint of ``rows`` rows whose row hashes sum to ``total`` (sums of parts add up)."""
    return Fingerprint(rows=int(rows), digest=f"{int(total) % 2**64:016x}", algorithm=algorithm)
