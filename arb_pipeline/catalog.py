"""What the pipeline ships, table by table.

One ``TableSpec`` per table says how it travels: by which cursor column it enters
partial backups (None: complete backups only, unless it rides along as an FK parent),
which column names a media file, and which columns never leave the sender. Keys,
column types and foreign keys are read from the PostgreSQL catalog, never written here,
so adding a table is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arb_pipeline.errors import SchemaError
from arb_pipeline.pg.connect import quote_ident

T = "AndroidRequests_"


@dataclass(frozen=True)
class TableSpec:
    name: str
    cursor: str | None = None  # partial backups select rows by this timestamp
    media_column: str | None = None  # names a file in the media folder
    excluded: tuple[str, ...] = ()  # personal or secret: never shipped unless configured

    @property
    def in_partials(self) -> bool:
        return self.cursor is not None


CATALOG: tuple[TableSpec, ...] = (
    # Reference data: changes only with a new GTFS version.
    TableSpec(T + "gtfs"),
    TableSpec(T + "busstop"),
    TableSpec(T + "service"),
    TableSpec(T + "servicesbybusstop"),
    TableSpec(T + "servicestopdistance"),
    TableSpec(T + "route"),
    TableSpec(T + "event"),
    # Buses: ride along with the bus events that reference them.
    TableSpec(T + "busv2"),
    TableSpec(T + "busassignment"),
    # User events: what partial backups carry.
    TableSpec(T + "eventforbusstop", cursor="timeStamp"),
    TableSpec(T + "eventforbusv2", cursor="timeStamp"),
    TableSpec(T + "stadisticdatafromregistrationbusstop", cursor="timeStamp"),
    TableSpec(T + "stadisticdatafromregistrationbus", cursor="timeStamp"),
    TableSpec(T + "report", cursor="timeStamp", media_column="imageName"),
    # Trips and telemetry: complete backups only (the largest tables).
    TableSpec(T + "token"),
    TableSpec(T + "poseintrajectoryoftoken"),
    TableSpec(T + "activetoken"),
    TableSpec(T + "devicepositionintime"),
    TableSpec(T + "nearbybuseslog"),
    # Users and gamification.
    TableSpec(T + "level"),
    TableSpec(T + "transappuser", excluded=("email", "sessionToken")),
    TableSpec(T + "scoreevent"),
    TableSpec(T + "scorehistory"),
)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): e.g. "timestamp with time zone", "character varying(8)"
    not_null: bool


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = field(default=())

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%(tables)s)
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_CONSTRAINTS_SQL = """
SELECT c.relname, k.contype, k.conname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       r.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class r ON r.oid = k.confrelid
WHERE n.nspname = 'public' AND k.contype IN ('p', 'f') AND c.relname = ANY(%(tables)s)
ORDER BY c.relname, k.conname
"""


def introspect(conn, tables: list[str] | tuple[str, ...]) -> dict[str, TableInfo]:
    """Columns, primary key and foreign keys of ``tables`` from pg_catalog.

    A table of the list that does not exist is a SchemaError naming it.
    """
    tables = list(tables)
    cols: dict[str, list[Column]] = {t: [] for t in tables}
    for rel, name, typ, not_null in conn.execute(_COLUMNS_SQL, {"tables": tables}):
        cols[rel].append(Column(name, typ, not_null))
    missing = [t for t in tables if not cols[t]]
    if missing:
        raise SchemaError(
            f"table(s) {', '.join(missing)} not found in the database's public schema; "
            "apply the migrations (`arb migrate`) or remove the entry from the catalog"
        )
    pks: dict[str, tuple[str, ...]] = {}
    fks: dict[str, list[ForeignKey]] = {t: [] for t in tables}
    for rel, kind, _name, keycols, ref, refcols in conn.execute(_CONSTRAINTS_SQL, {"tables": tables}):
        if kind == "p":
            pks[rel] = tuple(keycols)
        else:
            fks[rel].append(ForeignKey(tuple(keycols), ref, tuple(refcols)))
    no_pk = [t for t in tables if t not in pks]
    if no_pk:
        raise SchemaError(
            f"table(s) {', '.join(no_pk)} have no primary key; loads upsert by primary key, "
            "so every replicated table needs one"
        )
    return {t: TableInfo(t, tuple(cols[t]), pks[t], tuple(fks[t])) for t in tables}


def parents_first(infos: dict[str, TableInfo]) -> list[str]:
    """Tables ordered so each comes after the tables its foreign keys reference."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise SchemaError(f"foreign-key cycle between tables: {' -> '.join(path + (name,))}")
        state[name] = "visiting"
        for fk in infos[name].foreign_keys:
            if fk.ref_table in infos and fk.ref_table != name:
                visit(fk.ref_table, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in sorted(infos):
        visit(name, ())
    return order


def shipped_columns(spec: TableSpec, info: TableInfo, include_personal: bool = False) -> tuple[Column, ...]:
    """The columns that leave the sender for this table."""
    excluded = () if include_personal else spec.excluded
    unknown = [c for c in excluded if c not in info.column_names]
    if unknown:
        raise SchemaError(
            f"catalog excludes column(s) {', '.join(unknown)} of {spec.name}, "
            "which the database does not have; fix the catalog entry"
        )
    return tuple(c for c in info.columns if c.name not in excluded)


def short_name(table: str) -> str:
    """The table's name without Django's app prefix, for asset keys and messages."""
    return table[len(T) :] if table.startswith(T) else table


def spec_for(name: str, catalog: tuple[TableSpec, ...] = CATALOG) -> TableSpec:
    for spec in catalog:
        if spec.name == name:
            return spec
    raise SchemaError(f"table {name!r} is not in the catalog (arb_pipeline/catalog.py)")


def column_list(columns) -> str:
    return ", ".join(quote_ident(c.name if isinstance(c, Column) else c) for c in columns)
