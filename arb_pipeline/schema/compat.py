"""Whether a database's existing tables can take part, table by table, before a cutover.

``arb migrate --dry-run`` prints this next to the migration plan. On the sender: each
catalog table exists, has a primary key, and has the columns the catalog names (cursor,
media, excluded). On the receiver: each catalog table exists with a primary key; against
what the sender ships (read from the sender's database or a backup's manifest) the same
fit every load checks (package/schema_check.fit_table); without that, what the receiver
holds that the sender never ships (the catalog's excluded columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from arb_pipeline.catalog import Catalog, shipped_columns
from arb_pipeline.package.manifest import ColumnSpec
from arb_pipeline.package.schema_check import fit_table
from arb_pipeline.pg.introspect import TableInfo, read_tables
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.schema.catalog_sync import POSTPROCESS_REFERENCE_TABLES, REFERENCE_COLUMNS

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Finding:
    table: str
    level: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Shipped:
    """What the sender ships of one table: its columns (after exclusions) and primary key."""

    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]


def shipped_by_sender(sender_conn, catalog: Catalog) -> dict[str, Shipped]:
    """What the sender's database would ship, per catalog table it has."""
    infos = read_tables(sender_conn, catalog.table_names)
    out = {}
    for name, info in infos.items():
        cols = shipped_columns(catalog.spec(name), info)
        out[name] = Shipped(tuple(ColumnSpec(c.name, c.type) for c in cols), info.primary_key)
    return out


def shipped_in_backup(backup_dir: Path) -> dict[str, Shipped]:
    """What a backup carries, per table, from its manifest."""
    from arb_pipeline.package.reader import read_manifest

    manifest = read_manifest(Path(backup_dir))
    return {e.table: Shipped(e.columns, e.primary_key) for e in manifest.table_files()}


def _basics(name: str, info: TableInfo | None, catalog: Catalog) -> list[Finding]:
    if info is None:
        return [
            Finding(
                name,
                FAIL,
                "no such table",
                f"create it with the app's own migrations, or remove it from the catalog ({catalog.path})",
            )
        ]
    if not info.primary_key:
        return [
            Finding(
                name,
                FAIL,
                "no primary key (loads upsert by it)",
                f"ALTER TABLE {quote_ident(name)} ADD PRIMARY KEY (...)",
            )
        ]
    return []


def sender_findings(conn, catalog: Catalog) -> list[Finding]:
    infos = read_tables(conn, catalog.table_names)
    out = []
    for spec in catalog.specs:
        info = infos.get(spec.name)
        basic = _basics(spec.name, info, catalog)
        if basic:
            out += basic
            continue
        named = [c for c in (spec.cursor, spec.media_column, *spec.excluded) if c]
        lacking = [c for c in named if c not in info.column_names]
        if lacking:
            out.append(
                Finding(
                    spec.name,
                    FAIL,
                    f"the catalog names column(s) {', '.join(lacking)} the table lacks",
                    f"fix the table's entry in {catalog.path}",
                )
            )
        else:
            out.append(Finding(spec.name, OK, f"{len(info.columns) - len(spec.excluded)} column(s) shipped"))
    return out


def receiver_findings(conn, catalog: Catalog, shipped: dict[str, Shipped] | None = None) -> list[Finding]:
    infos = read_tables(conn, catalog.table_names)
    out = []
    for spec in catalog.specs:
        name, info = spec.name, infos.get(spec.name)
        basic = _basics(name, info, catalog)
        if basic:
            out += basic
            continue
        if shipped is None:
            out += _unshipped_columns(name, info, spec.excluded) or [Finding(name, OK, "fits")]
        elif name in shipped:
            out += _against_shipped(name, info, shipped[name]) or [Finding(name, OK, "fits")]
        else:
            out.append(Finding(name, OK, "exists (the sender's list has no such table: not compared)"))
    reference = POSTPROCESS_REFERENCE_TABLES.get(catalog.postprocess or "", ())
    present = read_tables(conn, reference)
    for name in reference:
        if name not in present:
            out.append(
                Finding(
                    name,
                    FAIL,
                    "postprocessing reads this reference table, which the receiver lacks",
                    "create it with TranSappViz's migrations, or drop `postprocess` from the catalog",
                )
            )
        else:
            out += _reference_columns(name, present[name], REFERENCE_COLUMNS.get(catalog.postprocess, {}))
    return out


def _reference_columns(name: str, info: TableInfo, expected: dict[str, str]) -> list[Finding]:
    want = expected.get(name)
    if want is None:
        return []
    have = {c.name: c.type for c in info.columns if c.name in want}
    differ = [
        f"{col} {have[col]} (TranSappViz: {typ})" if col in have else f"{col} missing (TranSappViz: {typ})"
        for col, typ in want.items()
        if have.get(col) != typ
    ]
    if not differ:
        return [Finding(name, OK, "reference table with TranSappViz's columns")]
    return [
        Finding(
            name,
            FAIL,
            f"postprocessing reads this reference table, whose columns differ from TranSappViz's: "
            f"{'; '.join(differ)}",
            "bring it to TranSappViz's models (its own migrations), or drop `postprocess` from the catalog",
        )
    ]


def _drop_not_null(table: str, column: str) -> str:
    return (
        f"ALTER TABLE {quote_ident(table)} ALTER COLUMN {quote_ident(column)} DROP NOT NULL (or SET DEFAULT)"
    )


def _against_shipped(name: str, info: TableInfo, shipped: Shipped) -> list[Finding]:
    out = []
    if tuple(sorted(shipped.primary_key)) != tuple(sorted(info.primary_key)):
        out.append(
            Finding(
                name,
                FAIL,
                f"primary key ({', '.join(info.primary_key)}) differs from the sender's "
                f"({', '.join(shipped.primary_key)}): rows can't be matched",
                "make the keys the same on both servers",
            )
        )
    fit = fit_table(shipped.columns, info)
    for col in fit.required_missing:
        out.append(
            Finding(
                name,
                FAIL,
                f"column {col} is NOT NULL without a default and the sender does not ship it: "
                "new rows can't be inserted",
                _drop_not_null(name, col),
            )
        )
    if fit.ignored:
        out.append(
            Finding(
                name,
                WARN,
                f"the sender ships column(s) {', '.join(fit.ignored)} this table lacks: not loaded",
                "add them (the app's migrations) if the receiver should hold them",
            )
        )
    for change in fit.changes:
        out.append(
            Finding(
                name,
                WARN,
                f"column {change.column} is {change.backup_type} on the sender, {change.receiver_type} "
                "here: loads cast it",
                "make the types equal if the cast can fail",
            )
        )
    return out


def _unshipped_columns(name: str, info: TableInfo, excluded: tuple[str, ...]) -> list[Finding]:
    out = []
    for col in (c for c in info.columns if c.name in excluded):
        if col.not_null and not col.has_default:
            out.append(
                Finding(
                    name,
                    FAIL,
                    f"column {col.name} is NOT NULL without a default and the sender never ships it "
                    "(catalog: excluded): new rows can't be inserted",
                    _drop_not_null(name, col.name),
                )
            )
        else:
            out.append(
                Finding(
                    name,
                    WARN,
                    f"holds column {col.name}, which the sender never ships (catalog: excluded): rows "
                    "keep the values they have, new rows get NULL",
                    f"clear or drop it if the receiver should not hold it: UPDATE {quote_ident(name)} "
                    f"SET {quote_ident(col.name)} = NULL",
                )
            )
    return out


def findings(conn, role: str, catalog: Catalog, shipped: dict[str, Shipped] | None = None) -> list[Finding]:
    return sender_findings(conn, catalog) if role == "sender" else receiver_findings(conn, catalog, shipped)
