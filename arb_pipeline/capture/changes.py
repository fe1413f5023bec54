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
from typing import NamedTuple

from arb_pipeline.capture.pgoutput import UNCHANGED, Delete, Insert, Relation, Truncate, Update, Value
from arb_pipeline.capture.slot import Transaction
from arb_pipeline.errors import ArbError

UPSERT, DELETE = "upsert", "delete"


class ChangeError(ArbError):
    pass


class RowChange(NamedTuple):  # one per changed row: a tuple is the cheapest record to build
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
        # relation id -> (its latest Relation, its change set, where its key columns are)
        self._by_relation: dict[int, tuple[Relation, TableChanges, tuple[int, ...]]] = {}

    def add(self, txn: Transaction) -> None:
        if txn.commit_lsn <= self.last_commit_lsn:
            raise ChangeError(
                f"transaction {txn.xid} (commit LSN {txn.commit_lsn}) is not after the previous one: "
                "change sets are built in commit order"
            )
        self.last_commit_lsn = txn.commit_lsn
        stamp = (txn.commit_lsn, txn.commit_time)
        for change in txn.changes:
            msg, relation = change.message, change.relation
            if relation is None:
                continue  # a logical message: no row
            if isinstance(msg, Truncate):
                raise ChangeError(
                    f"TRUNCATE of {table_name(relation)} in transaction {txn.xid} committed "
                    f"{txn.commit_time.isoformat()}: a partial can't carry it. Take a complete to resync "
                    "the table; avoid TRUNCATE on replicated tables (DELETE is captured row by row)"
                )
            self._apply(self._table(relation), relation, msg, stamp)

    def _table(self, relation: Relation) -> tuple[TableChanges, tuple[int, ...]]:
        """The relation's change set and where its key columns are in its rows (the same
        Relation object for every change until its schema changes: cached by identity)."""
        cached = self._by_relation.get(relation.relation_id)
        if cached is not None and cached[0] is relation:
            return cached[1], cached[2]
        table = table_name(relation)
        if table not in self.tables:
            if table not in self.primary_keys:
                raise ChangeError(
                    f"a change of table {table}, which has no known primary key here; "
                    "the publication holds a table the catalog does not"
                )
            self.tables[table] = TableChanges(table, self.primary_keys[table])
        tc = self.tables[table]
        names = relation.column_names
        tc.columns = names  # as the last change's Relation message lists them
        missing = [c for c in tc.key_columns if c not in names]
        if missing:
            raise ChangeError(f"table {table}: its changes lack key column(s) {', '.join(missing)}")
        key_at = tuple(names.index(c) for c in tc.key_columns)
        self._by_relation[relation.relation_id] = (relation, tc, key_at)
        return tc, key_at

    def _apply(self, table: tuple[TableChanges, tuple[int, ...]], relation: Relation, msg, stamp) -> None:
        tc, key_at = table
        names = tc.columns
        if isinstance(msg, Insert):
            new = msg.new
            key = self._key(tc, tuple([new[i] for i in key_at]))
            row = dict(zip(names, new, strict=True))
            if UNCHANGED in new:
                row = self._resolved(tc, key, row, None)
            tc.put(RowChange(UPSERT, key, row, *stamp))
        elif isinstance(msg, Update):
            new, old = msg.new, msg.old
            key = self._key(tc, tuple([new[i] for i in key_at]))
            row = dict(zip(names, new, strict=True))
            if UNCHANGED in new:
                # Only a whole old row ('O') holds other columns: a key ('K') has them NULL.
                whole_old = dict(zip(names, old, strict=True)) if msg.old_kind == "O" else None
                row = self._resolved(tc, key, row, whole_old)
            if old is not None:
                old_key = self._key(tc, tuple([old[i] for i in key_at]))
                if old_key != key:  # the key itself changed: the old one is gone
                    tc.put(RowChange(DELETE, old_key, None, *stamp))
            tc.put(RowChange(UPSERT, key, row, *stamp))
        elif isinstance(msg, Delete):
            old = msg.old
            tc.put(RowChange(DELETE, self._key(tc, tuple([old[i] for i in key_at])), None, *stamp))

    def _resolved(
        self, tc: TableChanges, key: tuple[str, ...], row: dict[str, Value], old_row: dict | None
    ) -> dict[str, str | None]:
        earlier = tc.rows.get(key)
        for name in [name for name, value in row.items() if value is UNCHANGED]:
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
        return row  # type: ignore[return-value]

    @staticmethod
    def _key(tc: TableChanges, values: tuple[Value, ...]) -> tuple[str, ...]:
        # A key column is never UNCHANGED-TOAST in practice; either it or NULL means no key was sent.
        if None in values or UNCHANGED in values:
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
