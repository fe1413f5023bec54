"""Parity between the sender's and the receiver's replicated tables.

This is the yardstick every other piece of the pipeline is judged with: after a load,
the receiver's copy of each replicated table must equal the sender's on the columns the
two share (and its media folder must hold the sender's files: media_parity.py).

How a table is compared
-----------------------
1. ``table_fingerprint`` (pg/rowhash.py, which also defines the row hash) computes, on
   the server, the row count and an order-independent digest of the listed columns.
   Equal fingerprints on both sides mean equal tables (up to a 2^-64 chance), and no
   row crosses the network.
2. Only when the fingerprints differ, ``compare_tables`` streams ``(primary key, row
   hash)`` from both sides in key order through server-side cursors and merges the two
   streams, so it names the first differing keys in bounded memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from arb_pipeline.catalog import current_catalog
from arb_pipeline.errors import ConfigError, SchemaError
from arb_pipeline.pg.connect import connect, describe_dsn
from arb_pipeline.pg.introspect import list_tables, read_tables
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.pg.rowhash import (
    ROW_HASH_ALGORITHM,
    SCHEMA,
    Fingerprint,
    pin_canonical_settings,
    qualified_table,
    row_hash_sql,
    table_fingerprint,
)

if TYPE_CHECKING:
    from arb_pipeline.ops.media_parity import MediaParity

MISSING = "missing on receiver"
EXTRA = "extra on receiver"
CHANGED = "changed"
KINDS = (MISSING, EXTRA, CHANGED)

_STREAM_BATCH = 5000
_cursor_names = itertools.count()


# --------------------------------------------------------------------------- schema discovery


@dataclass(frozen=True)
class SharedColumns:
    """What of a table both sides have: the compared columns and the primary key."""

    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    sender_only: tuple[str, ...] = ()
    receiver_only: tuple[str, ...] = ()


# Bookkeeping of one database (when *its* loads changed a row, for postprocessing): never
# equal between two databases, so never compared, even between two receivers.
LOCAL_COLUMNS = ("arb_changed_at",)


def shared_columns(
    sender_conn: psycopg.Connection, receiver_conn: psycopg.Connection, table: str
) -> SharedColumns:
    """Columns present on both sides in the sender's order, and the primary key both agree on.

    The receiver drops personal columns and adds its own, so only the intersection can
    be compared; the catalog's excluded columns never travel, so a receiver that kept
    them (adopted from the old tool) is not compared on them either. The key must be the
    same on both sides, or rows can't be paired.
    """
    infos = {}
    for side, conn in (("sender", sender_conn), ("receiver", receiver_conn)):
        found = read_tables(conn, [table], SCHEMA)
        if table not in found:
            raise SchemaError(
                f"table {table} not found on the {side} ({describe_dsn(conn.info.dsn)}): "
                f"check the table name or run `arb migrate --role {side}` on that database"
            )
        infos[side] = found[table]
    sender_cols = infos["sender"].column_names
    receiver_cols = infos["receiver"].column_names
    catalog = current_catalog()
    never_shipped = set(catalog.spec(table).excluded) if table in catalog.table_names else set()
    receiver_set = set(receiver_cols) - set(LOCAL_COLUMNS) - never_shipped
    shared = tuple(c for c in sender_cols if c in receiver_set)
    sender_key = infos["sender"].primary_key
    receiver_key = infos["receiver"].primary_key
    if sender_key != receiver_key:
        raise SchemaError(
            f"{table} has primary key ({', '.join(sender_key) or 'none'}) on the sender but "
            f"({', '.join(receiver_key) or 'none'}) on the receiver: rows can't be paired. "
            "Run `arb migrate` on both databases so their schemas match."
        )
    missing_key = [k for k in sender_key if k not in shared]
    if missing_key:
        raise SchemaError(
            f"{table}: primary key column(s) {', '.join(missing_key)} are not on both sides; "
            "run `arb migrate` on both databases"
        )
    return SharedColumns(
        table=table,
        columns=shared,
        key_columns=sender_key,
        sender_only=tuple(c for c in sender_cols if c not in receiver_set),
        receiver_only=tuple(c for c in receiver_cols if c not in set(sender_cols)),
    )


def replicated_tables(
    sender_conn: psycopg.Connection,
    receiver_conn: psycopg.Connection,
    tables: Iterable[str] | None = None,
) -> list[str]:
    """The tables named with the catalog's prefix (``AndroidRequests_*`` for TranSapp) on
    both sides (receiver-only tables are not replicated).

    With an explicit ``tables`` list, each must exist on both sides; a short name such
    as ``busstop`` is accepted for ``AndroidRequests_busstop``.
    """
    prefix = current_catalog().prefix
    if tables is None:
        receiver_set = set(list_tables(receiver_conn, prefix=prefix, schema=SCHEMA))
        return [t for t in list_tables(sender_conn, prefix=prefix, schema=SCHEMA) if t in receiver_set]
    on_sender = set(list_tables(sender_conn, schema=SCHEMA))
    on_receiver = set(list_tables(receiver_conn, schema=SCHEMA))
    chosen: list[str] = []
    for name in tables:
        if name not in on_sender and name not in on_receiver and prefix + name in on_sender:
            name = prefix + name
        for side, present in (("sender", on_sender), ("receiver", on_receiver)):
            if name not in present:
                raise SchemaError(
                    f"table {name} is not on the {side}: check the --table name (tables look like "
                    f"{current_catalog().table_names[0]}) or run `arb migrate --role {side}`"
                )
        if name not in chosen:
            chosen.append(name)
    return chosen


# --------------------------------------------------------------------------- reports


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])


def _format_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in key.items())


@dataclass(frozen=True)
class RowDiff:
    """One differing primary key; for ``changed`` rows, the columns that differ (when inspected)."""

    kind: str
    key: dict[str, Any]
    columns: tuple[str, ...] | None = None

    def describe(self) -> str:
        text = f"{_format_key(self.key)} {self.kind}"
        if self.kind == CHANGED and self.columns is not None:
            text += f" ({', '.join(self.columns) or 'no single column differs'})"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "key": {k: _json_value(v) for k, v in self.key.items()}}
        if self.columns is not None:
            out["columns"] = list(self.columns)
        return out


@dataclass
class TableParity:
    """One table's fingerprints on both sides and, on drift, the first differing keys."""

    table: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    sender: Fingerprint
    receiver: Fingerprint
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    diffs: list[RowDiff] = field(default_factory=list)
    sender_only_columns: tuple[str, ...] = ()
    receiver_only_columns: tuple[str, ...] = ()
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.sender == self.receiver

    def format(self) -> str:
        if self.ok:
            return f"{self.table}: OK ({self.sender.rows} rows)"
        parts = [f"{self.table}: DRIFT sender {self.sender.rows} rows, receiver {self.receiver.rows} rows"]
        if self.sender.rows == self.receiver.rows:
            parts[0] += f" (digest {self.sender.digest} vs {self.receiver.digest})"
        if any(self.counts.values()):
            parts.append(format_counts(self.counts))
        if self.diffs:
            parts.append("first keys: " + "; ".join(d.describe() for d in self.diffs))
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "ok": self.ok,
            "columns": list(self.columns),
            "key_columns": list(self.key_columns),
            "sender": self.sender.to_dict(),
            "receiver": self.receiver.to_dict(),
            "counts": dict(self.counts),
            "diffs": [d.to_dict() for d in self.diffs],
            "sender_only_columns": list(self.sender_only_columns),
            "receiver_only_columns": list(self.receiver_only_columns),
            "note": self.note,
        }


@dataclass
class ParityReport:
    """The outcome of one parity check: ``ok`` only if every table (and the media) match."""

    sender: str = ""
    receiver: str = ""
    tables: list[TableParity] = field(default_factory=list)
    media: MediaParity | None = None
    sender_only_tables: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and (self.media is None or self.media.ok)

    def table(self, name: str) -> TableParity:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    @property
    def drifted(self) -> list[str]:
        return [t.table for t in self.tables if not t.ok]

    def format(self) -> str:
        lines = [t.format() for t in self.tables]
        if self.media is not None:
            lines.append(self.media.format())
        if self.sender_only_tables:
            lines.append("not compared (not on the receiver): " + ", ".join(self.sender_only_tables))
        drifted = self.drifted
        if self.ok:
            summary = f"parity OK: {len(self.tables)} tables equal"
        else:
            summary = f"parity DRIFT: {len(drifted)} of {len(self.tables)} tables differ"
            if self.media is not None and not self.media.ok:
                summary += ", media differ"
        if self.sender or self.receiver:
            summary += f" (sender {self.sender}; receiver {self.receiver})"
        lines.append(summary)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sender": self.sender,
            "receiver": self.receiver,
            "row_hash": ROW_HASH_ALGORITHM,
            "tables": [t.to_dict() for t in self.tables],
            "media": None if self.media is None else self.media.to_dict(),
            "sender_only_tables": list(self.sender_only_tables),
        }


# --------------------------------------------------------------------------- table comparison


def _open_snapshot(dsn: str) -> psycopg.Connection:
    """A read-only REPEATABLE READ connection: counts, digests and key diffs see one snapshot."""
    conn = connect(dsn, application_name="arb_parity")
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        pin_canonical_settings(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _stream_row_hashes(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    collatable: set[str],
) -> Iterator[tuple[tuple, str]]:
    """``(key, row hash)`` in key order through a server-side cursor (bounded memory).

    Text keys sort with ``COLLATE "C"`` (code point order for UTF-8) so both servers
    and Python agree on the order whatever the databases' collations are.
    """
    keys = ", ".join(f"t.{quote_ident(k)}" for k in key_columns)
    order = ", ".join(
        f"t.{quote_ident(k)}" + (' COLLATE "C"' if k in collatable else "") for k in key_columns
    )
    sql = f"SELECT {keys}, {row_hash_sql(columns)} FROM {qualified_table(table)} t ORDER BY {order}"
    n = len(key_columns)
    with conn.cursor(name=f"arb_parity_{next(_cursor_names)}") as cur:
        cur.itersize = _STREAM_BATCH
        cur.execute(sql)
        for row in cur:
            yield tuple(row[:n]), row[n]


_END = object()


def _merge(
    sender: Iterator[tuple[tuple, str]], receiver: Iterator[tuple[tuple, str]]
) -> Iterator[tuple[str, tuple]]:
    """Merge two key-ordered streams into ``(kind, key)`` for every key that differs."""
    s = next(sender, _END)
    r = next(receiver, _END)
    while s is not _END or r is not _END:
        if r is _END or (s is not _END and s[0] < r[0]):
            yield MISSING, s[0]
            s = next(sender, _END)
        elif s is _END or r[0] < s[0]:
            yield EXTRA, r[0]
            r = next(receiver, _END)
        else:
            if s[1] != r[1]:
                yield CHANGED, s[0]
            s = next(sender, _END)
            r = next(receiver, _END)


def _column_texts(
    conn: psycopg.Connection, table: str, columns: Sequence[str], key_columns: Sequence[str], key: tuple
) -> list[str | None] | None:
    """Each column's canonical text (the same element text the row hash is built from)."""
    select = ", ".join(f"ROW(t.{quote_ident(c)})::text" for c in columns)
    where = " AND ".join(f"t.{quote_ident(k)} = %s" for k in key_columns)
    row = conn.execute(f"SELECT {select} FROM {qualified_table(table)} t WHERE {where}", key).fetchone()
    return None if row is None else list(row)


def _diff_table(sender_conn, receiver_conn, result: TableParity, max_diffs: int) -> None:
    table, columns, key_columns = result.table, result.columns, result.key_columns
    if not key_columns:
        result.note = "no primary key, so differing rows can't be named"
        return
    info = read_tables(sender_conn, [table], SCHEMA)[table]
    collatable = {c.name for c in info.columns if c.collatable and c.name in key_columns}
    s_stream = _stream_row_hashes(sender_conn, table, columns, key_columns, collatable)
    r_stream = _stream_row_hashes(receiver_conn, table, columns, key_columns, collatable)
    try:
        for kind, key in _merge(s_stream, r_stream):
            result.counts[kind] += 1
            if len(result.diffs) < max_diffs:
                result.diffs.append(RowDiff(kind, dict(zip(key_columns, key, strict=True))))
    finally:
        s_stream.close()
        r_stream.close()
    for i, diff in enumerate(result.diffs):
        if diff.kind != CHANGED:
            continue
        key = tuple(diff.key[k] for k in key_columns)
        s_text = _column_texts(sender_conn, table, columns, key_columns, key)
        r_text = _column_texts(receiver_conn, table, columns, key_columns, key)
        if s_text is not None and r_text is not None:
            differing = tuple(c for c, a, b in zip(columns, s_text, r_text, strict=True) if a != b)
            result.diffs[i] = RowDiff(CHANGED, diff.key, differing)
    if not any(result.counts.values()):
        result.note = (
            "digests differ but no differing key was found (were the tables written during the check?)"
        )


def compare_tables(
    sender_dsn: str,
    receiver_dsn: str,
    tables: Iterable[str] | None = None,
    max_diffs: int = 10,
    progress=None,
) -> ParityReport:
    """Compare the replicated tables of two databases on their shared columns.

    ``progress`` (an ``arb_pipeline.progress.Progress``) counts the tables as they are done.

    Each side is read in one read-only REPEATABLE READ snapshot. The two snapshots are
    taken at (about) the same moment but on different servers, so on a live sender a
    recent row may show as missing until the next load: compare after a load.
    A table whose fingerprints differ is read once more on both sides, in key order, to
    count every differing key; only the first ``max_diffs`` are named.
    """
    if max_diffs < 0:
        raise ConfigError(f"max_diffs must be 0 or more, not {max_diffs}")
    report = ParityReport(sender=describe_dsn(sender_dsn), receiver=describe_dsn(receiver_dsn))
    with _open_snapshot(sender_dsn) as s_conn, _open_snapshot(receiver_dsn) as r_conn:
        names = replicated_tables(s_conn, r_conn, tables)
        if tables is None:
            receiver_set = set(names)
            report.sender_only_tables = tuple(
                t
                for t in list_tables(s_conn, prefix=current_catalog().prefix, schema=SCHEMA)
                if t not in receiver_set
            )
        for table in progress.track(names, "parity") if progress is not None else names:
            shared = shared_columns(s_conn, r_conn, table)
            result = TableParity(
                table=table,
                columns=shared.columns,
                key_columns=shared.key_columns,
                sender=table_fingerprint(s_conn, table, shared.columns, shared.key_columns),
                receiver=table_fingerprint(r_conn, table, shared.columns, shared.key_columns),
                sender_only_columns=shared.sender_only,
                receiver_only_columns=shared.receiver_only,
            )
            if not result.ok:
                _diff_table(s_conn, r_conn, result, max_diffs)
            report.tables.append(result)
        s_conn.rollback()
        r_conn.rollback()
    return report
