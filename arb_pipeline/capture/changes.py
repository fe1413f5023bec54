"""Decoded transactions folded into per-table change sets, keyed by primary key.

Within a window the last change of a key wins: an insert or update leaves the row whole
(every column's text), a delete leaves the key alone. Each carries the commit LSN and commit
time of the transaction that made it, so the receiver can version rows by them (issue 18: not
by a snapshot taken later). Sets keep commit order: a key changed again moves to the end.

Refused loudly, never shipped wrong:
- a TRUNCATE (a partial can't say "every row is gone"; a complete resyncs the table);
- an unchanged-TOAST value (pgoutput did not send it) that can't be resolved. It is resolved
  from the update's own old row (sent whole under REPLICA IDENTITY FULL) or from the same
  key's row earlier in the window; otherwise the error names the table and column and the fix.
  It is never written as NULL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from arb_pipeline.capture.pgoutput import UNCHANGED, Delete, Insert, Relation, Truncate, Update, Value
from arb_pipeline.capture.slot import Transaction
from arb_pipeline.errors import ArbError

UPSERT, DELETE = "upsert", "delete"


class ChangeError(ArbError):
    pass


@dataclass(frozen=True)
class RowChange:
    op: str  # UPSERT or DELETE
    key: tuple[str, ...]  # primary key values, as text, in the key's column order
    values: Mapping[str, str | None] | None  # UPSERT: every column; DELETE: None
    commit_lsn: int
    commit_time: datetime


@dataclass
class TableChanges:
    table: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...] = ()  # as the last change's Relation message lists them
    rows: dict[tuple[str, ...], RowChange] = field(default_factory=dict)  # in commit order

    def put(self, change: RowChange) -> None:
        self.rows.pop(change.key, None)  # re-inserted: the dict's order is commit order
        self.rows[change.key] = change

    @property
    def upserts(self) -> list[RowChange]:
        return [c for c in self.rows.values() if c.op == UPSERT]

    @property
    def deletes(self) -> list[RowChange]:
        return [c for c in self.rows.values() if c.op == DELETE]


def table_name(relation: Relation) -> str:
    """The catalog's name of a relation: schema public is left out, as in the catalog."""
    return relation.name if relation.namespace == "public" else f"{relation.namespace}.{relation.name}"


class ChangeSets:
    """Per-table change sets of a window, fed one transaction at a time in commit order."""

    def __init__(self, primary_keys: Mapping[str, tuple[str, ...]]):
        self.primary_keys = dict(primary_keys)  # table -> key columns (catalog.introspect)
        self.tables: dict[str, TableChanges] = {}
        self.last_commit_lsn = -1

    def add(self, txn: Transaction) -> None:
        if txn.commit_lsn <= self.last_commit_lsn:
            raise ChangeError(
                f"transaction {txn.xid} (commit LSN {txn.commit_lsn}) is not after the previous one: "
                "change sets are built in commit order"
            )
        self.last_commit_lsn = txn.commit_lsn
        for change in txn.changes:
            msg = change.message
            if change.relation is None:
                continue  # a logical message: no row
            table = table_name(change.relation)
            if isinstance(msg, Truncate):
                raise ChangeError(
                    f"TRUNCATE of {table} in transaction {txn.xid} committed {txn.commit_time.isoformat()}: "
                    "a partial can't carry it. Take a complete to resync the table; avoid TRUNCATE on "
                    "replicated tables (DELETE is captured row by row)"
                )
            self._apply(self._table(table), change.relation, msg, txn)

    def _table(self, table: str) -> TableChanges:
        if table not in self.tables:
            if table not in self.primary_keys:
                raise ChangeError(
                    f"a change of table {table}, which has no known primary key here; "
                    "the publication holds a table the catalog does not"
                )
            self.tables[table] = TableChanges(table, self.primary_keys[table])
        return self.tables[table]

    def _apply(self, tc: TableChanges, relation: Relation, msg, txn: Transaction) -> None:
        names = relation.column_names
        tc.columns = names
        stamp = dict(commit_lsn=txn.commit_lsn, commit_time=txn.commit_time)
        if isinstance(msg, Insert):
            row = self._resolved(tc, names, msg.new, None)
            tc.put(RowChange(UPSERT, self._key(tc, row), row, **stamp))
        elif isinstance(msg, Update):
            old = dict(zip(names, msg.old, strict=True)) if msg.old is not None else None
            # Only a whole old row ('O') holds other columns: a key ('K') has them NULL.
            row = self._resolved(tc, names, msg.new, old if msg.old_kind == "O" else None)
            key = self._key(tc, row)
            if old is not None:
                old_key = self._key(tc, old)
                if old_key != key:  # the key itself changed: the old one is gone
                    tc.put(RowChange(DELETE, old_key, None, **stamp))
            tc.put(RowChange(UPSERT, key, row, **stamp))
        elif isinstance(msg, Delete):
            old = dict(zip(names, msg.old, strict=True))
            tc.put(RowChange(DELETE, self._key(tc, old), None, **stamp))

    def _resolved(
        self, tc: TableChanges, names: tuple[str, ...], new: tuple[Value, ...], old_row: dict | None
    ) -> dict[str, str | None]:
        row = dict(zip(names, new, strict=True))
        unchanged = [name for name, value in row.items() if value is UNCHANGED]
        if not unchanged:
            return row
        earlier = tc.rows.get(self._key(tc, row)) if not any(c in unchanged for c in tc.key_columns) else None
        for name in unchanged:
            if old_row is not None and name in old_row and old_row[name] is not UNCHANGED:
                row[name] = old_row[name]  # REPLICA IDENTITY FULL sends the old row whole
            elif earlier is not None and earlier.values is not None and name in earlier.values:
                row[name] = earlier.values[name]  # the same row, shipped whole earlier in the window
            else:
                raise ChangeError(
                    f"table {tc.table}, column {name}: an update left this large (TOASTed) value "
                    "unchanged and PostgreSQL did not send it, so the row can't be shipped whole. "
                    f'Run ALTER TABLE "{tc.table}" REPLICA IDENTITY FULL; on the sender (updates '
                    "then carry the old row whole) and take a complete"
                )
        return row

    def _key(self, tc: TableChanges, row: Mapping[str, Value]) -> tuple[str, ...]:
        values = tuple(row.get(c) for c in tc.key_columns)
        if any(not isinstance(v, str) for v in values):
            raise ChangeError(
                f"table {tc.table}: a change without its primary key ({', '.join(tc.key_columns)}); "
                "the table's REPLICA IDENTITY must include the primary key (the default does)"
            )
        return values  # type: ignore[return-value]


def change_sets(
    transactions: Iterable[Transaction], primary_keys: Mapping[str, tuple[str, ...]]
) -> dict[str, TableChanges]:
    """The per-table change sets of ``transactions`` (in commit order)."""
    sets = ChangeSets(primary_keys)
    for txn in transactions:
        sets.add(txn)
    return sets.tables
