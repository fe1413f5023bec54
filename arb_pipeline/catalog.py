"""What the pipeline ships, table by table.

One ``TableSpec`` per table says how it travels: by which cursor column it enters
partial backups (None: complete backups only, unless it rides along as an FK parent),
which column names a media file, which columns never leave the sender, and what a
complete does with receiver rows it lacks (``delete_policy``). Keys,
column types and foreign keys are read from the PostgreSQL catalog, never written here,
so adding a table is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from arb_pipeline.errors import SchemaError
from arb_pipeline.pg.introspect import Column, TableInfo, read_tables
from arb_pipeline.pg.quote import quote_ident

APP_TABLE_PREFIX = "AndroidRequests_"  # Django's app label: every TranSapp table name starts with it


def app_table(short: str) -> str:
    """The full name of the TranSapp table ``short``: ``busv2`` -> ``AndroidRequests_busv2``."""
    return APP_TABLE_PREFIX + short


def app_table_sql(short: str) -> str:
    """``app_table(short)`` quoted, for SQL written as text."""
    return quote_ident(app_table(short))


SHIPPED_ONLY, MIRROR = "shipped-only", "mirror"
DELETE_POLICIES = (SHIPPED_ONLY, MIRROR)


@dataclass(frozen=True)
class TableSpec:
    name: str
    cursor: str | None = None  # partial backups select rows by this timestamp
    media_column: str | None = None  # names a file in the media folder
    excluded: tuple[str, ...] = ()  # personal or secret: never shipped unless configured
    # What a complete removes of the receiver's rows it does not have (load/apply.py):
    # "shipped-only": only rows a backup wrote (arb_synced_at set); history the receiver had
    # before the pipeline, or rows only it has, stay. "mirror": the complete's rows are the
    # truth, unshipped rows go too; for tables whose rows the sender deletes by design.
    delete_policy: str = SHIPPED_ONLY

    def __post_init__(self):
        if self.delete_policy not in DELETE_POLICIES:
            raise SchemaError(
                f"catalog entry {self.name}: delete_policy {self.delete_policy!r} is not one of "
                f"{', '.join(DELETE_POLICIES)}"
            )

    @property
    def in_partials(self) -> bool:
        return self.cursor is not None


CATALOG: tuple[TableSpec, ...] = (
    # Reference data: changes only with a new GTFS version.
    TableSpec(app_table("gtfs")),
    TableSpec(app_table("busstop")),
    TableSpec(app_table("service")),
    TableSpec(app_table("servicesbybusstop")),
    TableSpec(app_table("servicestopdistance")),
    TableSpec(app_table("route")),
    TableSpec(app_table("event")),
    # Buses: ride along with the bus events that reference them.
    TableSpec(app_table("busv2")),
    TableSpec(app_table("busassignment")),
    # User events: what partial backups carry.
    TableSpec(app_table("eventforbusstop"), cursor="timeStamp"),
    TableSpec(app_table("eventforbusv2"), cursor="timeStamp"),
    TableSpec(app_table("stadisticdatafromregistrationbusstop"), cursor="timeStamp"),
    TableSpec(app_table("stadisticdatafromregistrationbus"), cursor="timeStamp"),
    TableSpec(app_table("report"), cursor="timeStamp", media_column="imageName"),
    # Trips and telemetry: complete backups only (the largest tables).
    TableSpec(app_table("token")),
    TableSpec(app_table("poseintrajectoryoftoken")),
    TableSpec(app_table("activetoken"), delete_policy=MIRROR),  # a trip's row, deleted when it ends
    TableSpec(app_table("devicepositionintime")),
    TableSpec(app_table("nearbybuseslog")),
    # Users and gamification.
    TableSpec(app_table("level")),
    TableSpec(app_table("transappuser"), excluded=("email", "sessionToken")),
    TableSpec(app_table("scoreevent")),
    TableSpec(app_table("scorehistory")),
)

PARTIAL_SPECS: tuple[TableSpec, ...] = tuple(s for s in CATALOG if s.in_partials)
PARTIAL_TABLES: tuple[str, ...] = tuple(s.name for s in PARTIAL_SPECS)
COMPLETE_TABLES: tuple[str, ...] = tuple(s.name for s in CATALOG)
MIRRORED_TABLES: frozenset[str] = frozenset(s.name for s in CATALOG if s.delete_policy == MIRROR)


def tables_of(kind: str) -> tuple[str, ...]:
    """The tables a ``partial`` or ``complete`` backup carries."""
    return PARTIAL_TABLES if kind == "partial" else COMPLETE_TABLES


def introspect(conn, tables: list[str] | tuple[str, ...]) -> dict[str, TableInfo]:
    """Columns, primary key and foreign keys of the catalog's ``tables`` (``pg.introspect``).

    A table of the list that does not exist, or has no primary key, is a SchemaError naming it.
    """
    tables = list(tables)
    infos = read_tables(conn, tables)
    missing = [t for t in tables if t not in infos]
    if missing:
        raise SchemaError(
            f"table(s) {', '.join(missing)} not found in the database's public schema; "
            "apply the migrations (`arb migrate`) or remove the entry from the catalog"
        )
    no_pk = [t for t in tables if not infos[t].primary_key]
    if no_pk:
        raise SchemaError(
            f"table(s) {', '.join(no_pk)} have no primary key; loads upsert by primary key, "
            "so every replicated table needs one"
        )
    return {t: infos[t] for t in tables}


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
    return table.removeprefix(APP_TABLE_PREFIX)
