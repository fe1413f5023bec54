"""Whether the receiver's tables can take a backup, before anything of it is loaded.

:func:`check_schema` (plain Python; reads the receiver's table definitions): every table of the
backup can be loaded into the receiver's tables; the result is the :class:`SchemaPlan` the
loader follows (which columns to load, which to leave out). A backup that can't be loaded by
design (unknown table, a different primary key) is a VerifyError; a failure whose fix is on
the receiver is a :class:`SchemaMismatch` (``backup_at_fault`` False): the backup is fine
and stays in the inbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from arb_pipeline.catalog import current_catalog
from arb_pipeline.package.manifest import COMMIT_LSN_COLUMN, ColumnSpec, Manifest
from arb_pipeline.package.verify import VerifyError, altered_backup_error
from arb_pipeline.pg.introspect import TableInfo, read_tables

log = logging.getLogger(__name__)


class SchemaMismatch(VerifyError):
    """The backup is intact but the receiver's schema can't take it yet: fix the receiver,
    the backup stays where it is and loads on a later try."""

    backup_at_fault = False


@dataclass(frozen=True)
class TypeChange:
    column: str
    backup_type: str
    receiver_type: str


@dataclass
class SchemaPlan:
    """How each table of a backup maps onto the receiver's table."""

    backup_id: str
    # Per table: the backup's columns that the receiver has, in backup order (what to load).
    columns: dict[str, tuple[ColumnSpec, ...]] = field(default_factory=dict)
    # Per table: the receiver's primary key (equal to the backup's).
    primary_key: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per table: backup columns left out (the receiver lacks them, or computes them itself).
    ignored: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Per table: columns whose type string differs; the load casts, and fails clearly if it can't.
    type_changes: dict[str, tuple[TypeChange, ...]] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        out = []
        for table, cols in self.ignored.items():
            out.append(
                f"backup {self.backup_id}: table {table}: column(s) {', '.join(cols)} are not loaded "
                "(the receiver table lacks them); the other columns load, and a later complete "
                "backup fills them once the receiver is migrated (`arb migrate --role receiver`)"
            )
        for table, changes in self.type_changes.items():
            for c in changes:
                out.append(
                    f"backup {self.backup_id}: table {table}: column {c.column} is {c.backup_type} in the "
                    f"backup but {c.receiver_type} on the receiver; the load casts it"
                )
        return out


@dataclass(frozen=True)
class TableFit:
    """How the columns a sender ships fit one receiver table (``arb migrate --dry-run`` and
    every load ask the same question)."""

    load: tuple[ColumnSpec, ...]  # shipped columns the receiver has, in shipped order
    ignored: tuple[str, ...]  # shipped columns the receiver lacks (or computes itself)
    changes: tuple[TypeChange, ...]  # shipped columns whose type differs: the load casts
    required_missing: tuple[str, ...]  # receiver columns a new row can't do without, not shipped


def fit_table(columns: tuple[ColumnSpec, ...] | list[ColumnSpec], info: TableInfo) -> TableFit:
    shipped = {c.name for c in columns}
    by_name = {c.name: c for c in info.columns}
    required = tuple(
        c.name
        for c in info.columns
        if c.not_null and not c.has_default and not c.generated and c.name not in shipped
    )
    load, ignored, changes = [], [], []
    for col in columns:
        mine = by_name.get(col.name)
        if mine is None or mine.generated:
            ignored.append(col.name)
            continue
        load.append(col)
        if mine.type != col.type:
            changes.append(TypeChange(col.name, col.type, mine.type))
    return TableFit(tuple(load), tuple(ignored), tuple(changes), required)


def check_schema(manifest: Manifest, receiver_conn, *, replicated_tables=None) -> SchemaPlan:
    """Map every table (and captured delete) file of ``manifest`` onto the receiver's tables.

    ``replicated_tables`` (default: the catalog's tables) are the tables a backup may
    write; a receiver-only table is never written, even when it exists. Raises
    VerifyError for a backup that can't be loaded by design (unknown table, a different
    primary key) and SchemaMismatch (not ``backup_at_fault``) when the receiver must change.
    """
    catalog = current_catalog()
    allowed = set(replicated_tables) if replicated_tables is not None else set(catalog.table_names)
    bid = manifest.backup_id
    entries = manifest.table_files() + manifest.delete_files()
    tables = list(dict.fromkeys(e.table for e in entries))
    receiver = read_tables(receiver_conn, tables)
    plan = SchemaPlan(backup_id=bid)
    for entry in entries:
        table = entry.table
        info = receiver.get(table)
        if table not in allowed or info is None:
            why = (
                "the receiver has no such table"
                if info is None
                else f"the receiver does not replicate it (not in the catalog {catalog.path})"
            )
            raise VerifyError(
                f"backup {bid}: unknown table {table}: {why}; add a receiver migration or remove it "
                f"from the sender's catalog (both servers need the same catalog file); then re-queue it "
                f"(`arb requeue {bid}`) once that is done",
                backup_id=bid,
                file=entry.name,
            )
        names = [c.name for c in entry.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise altered_backup_error(
                manifest,
                entry.name,
                f"the manifest lists column(s) {', '.join(dupes)} of table {table} twice",
            )
        missing_pk = [c for c in entry.primary_key if c not in names]
        if missing_pk:
            raise altered_backup_error(
                manifest,
                entry.name,
                f"primary key column(s) {', '.join(missing_pk)} of table {table} "
                "are not among the backup's columns",
            )
        receiver_pk = info.primary_key
        if not receiver_pk:
            raise SchemaMismatch(
                f"receiver table {table} has no primary key; loads upsert by primary key: add "
                f"one ({', '.join(entry.primary_key)}) with a receiver migration",
                backup_id=bid,
                file=entry.name,
            )
        if set(receiver_pk) != set(entry.primary_key) or len(receiver_pk) != len(entry.primary_key):
            raise VerifyError(
                f"backup {bid}: table {table}: primary key differs: the backup's is "
                f"({', '.join(entry.primary_key)}), the receiver's is ({', '.join(receiver_pk)}); "
                "rows can't be matched: make the sender's and receiver's keys the same "
                "(a migration on one side); then re-queue it "
                f"(`arb requeue {bid}`) once that is done",
                backup_id=bid,
                file=entry.name,
            )
        if entry.kind == "deletes":
            continue  # keys only: the table and its key are what must fit
        # a captured file's commit LSN is the load's version, not a column of the table
        captured = manifest.source == "capture"
        fit = fit_table(
            tuple(c for c in entry.columns if not (captured and c.name == COMMIT_LSN_COLUMN)), info
        )
        if fit.required_missing:
            col = fit.required_missing[0]
            raise SchemaMismatch(
                f"receiver table {table} requires column {col} that backup {bid} does not "
                f"carry: make {col} nullable or give it a default (`arb migrate --dry-run` lists "
                "what each table lacks)",
                backup_id=bid,
                file=entry.name,
            )
        plan.columns[table] = fit.load
        plan.primary_key[table] = receiver_pk
        if fit.ignored:
            plan.ignored[table] = fit.ignored
        if fit.changes:
            plan.type_changes[table] = fit.changes
    for message in plan.warnings():
        log.warning(message)
    return plan


__all__ = ["SchemaMismatch", "SchemaPlan", "TableFit", "TypeChange", "check_schema", "fit_table"]
