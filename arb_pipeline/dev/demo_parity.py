"""The demo's parity summary: is the receiver in step with the sender up to the newest
window it has loaded?

With live traffic the sender is always ahead of the receiver, so comparing whole tables
says only "catching up". What a loaded partial promises is narrower and checkable: every
row the sender has with a cursor (``timeStamp``) before the newest loaded window's end is
on the receiver at the same version (same values in every shared column), and the
receiver has no row before that point that the sender no longer has. A row whose cursor
moved past that point on the sender (a new vote on an event) is not a difference: a later
window carries it.

Only the tables partials carry are compared (``TableSpec.cursor``); the others catch up
with each day's complete by design (docs/guarantees.md, promise 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from arb_pipeline.catalog import current_catalog
from arb_pipeline.ops.parity import shared_columns
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.pg.rowhash import canonical_text_settings, row_hash_sql


@dataclass(frozen=True)
class TableInStep:
    table: str
    rows: int  # sender rows with a cursor before ``through``
    behind: int  # of those, missing on the receiver or at another version
    extra: int  # receiver rows before ``through`` whose key the sender no longer has

    @property
    def ok(self) -> bool:
        return not (self.behind or self.extra)


@dataclass(frozen=True)
class LoadedParity:
    partials: int
    completes: int
    through: datetime | None  # newest loaded partial's window end (or complete's snapshot)
    tables: tuple[TableInStep, ...] = ()

    @property
    def ok(self) -> bool:
        return self.through is not None and all(t.ok for t in self.tables)

    def format(self) -> str:
        head = f"loaded {self.partials} partial and {self.completes} complete backups"
        if self.through is None:
            return f"{head}; parity: nothing loaded yet"
        when = f"parity through {self.through:%Y-%m-%d %H:%M:%S} UTC"
        if self.ok:
            rows = sum(t.rows for t in self.tables)
            return f"{head}; {when}: OK ({rows} rows in {len(self.tables)} tables match)"
        short_name = current_catalog().short_name
        drift = ", ".join(
            f"{short_name(t.table)} {t.behind} of {t.rows} rows behind"
            + (f" and {t.extra} extra" if t.extra else "")
            for t in self.tables
            if not t.ok
        )
        return f"{head}; {when}: DIFFERS: {drift}"


def loaded_through(receiver_dsn: str) -> tuple[int, int, datetime | None]:
    """(loaded partials, loaded completes, the point the receiver is complete up to) from the ledger."""
    with connect(receiver_dsn, autocommit=True) as conn:
        partials, completes, through = conn.execute(
            "SELECT count(*) FILTER (WHERE kind = 'partial'), count(*) FILTER (WHERE kind = 'complete'), "
            "max(CASE WHEN kind = 'partial' THEN window_end ELSE snapshot_time END) "
            "FROM arb_loaded_backup WHERE outcome = 'loaded'"
        ).fetchone()
    return int(partials), int(completes), through


def _versions(
    conn, table: str, cursor: str, columns, key_columns, through: datetime
) -> dict[tuple, tuple[str, bool]]:
    """key -> (row hash over ``columns``, cursor before ``through``) of every row of ``table``."""
    keys = ", ".join(f"t.{quote_ident(k)}" for k in key_columns)
    sql = (
        f"SELECT {keys}, {row_hash_sql(columns)}, t.{quote_ident(cursor)} < %s "
        f"FROM public.{quote_ident(table)} t"
    )
    with canonical_text_settings(conn):
        rows = conn.execute(sql, (through,)).fetchall()
    width = len(key_columns)
    return {tuple(r[:width]): (r[width], bool(r[width + 1])) for r in rows}


def table_in_step(sender_conn, receiver_conn, table: str, cursor: str, through: datetime) -> TableInStep:
    shared = shared_columns(sender_conn, receiver_conn, table)
    sender = _versions(sender_conn, table, cursor, shared.columns, shared.key_columns, through)
    receiver = _versions(receiver_conn, table, cursor, shared.columns, shared.key_columns, through)
    before = {key: digest for key, (digest, early) in sender.items() if early}
    behind = sum(1 for key, digest in before.items() if receiver.get(key, (None,))[0] != digest)
    extra = sum(1 for key, (_, early) in receiver.items() if early and key not in sender)
    return TableInStep(table, len(before), behind, extra)


def loaded_parity(sender_dsn: str, receiver_dsn: str) -> LoadedParity:
    """Parity of the partial tables up to the newest loaded window (see the module docstring)."""
    partials, completes, through = loaded_through(receiver_dsn)
    if through is None:
        return LoadedParity(partials, completes, None)
    with (
        connect(sender_dsn, autocommit=True) as sender_conn,
        connect(receiver_dsn, autocommit=True) as receiver_conn,
    ):
        tables = tuple(
            table_in_step(sender_conn, receiver_conn, spec.name, spec.cursor, through)
            for spec in current_catalog().partial_specs
        )
    return LoadedParity(partials, completes, through, tables)
