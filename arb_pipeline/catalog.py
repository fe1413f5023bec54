"""What the pipeline ships, table by table: the catalog, a TOML file a team edits
(docs/catalog.md; ``ARB_CATALOG``, default the packaged ``catalogs/transapp.toml``).

One ``TableSpec`` per table says how it travels: by which cursor column it enters
partial backups (None: complete backups only, unless it rides along as an FK parent),
which column names a media file, which columns never leave the sender, and what a
complete does with receiver rows it lacks (``delete_policy``). Keys, column types and
foreign keys are read from the PostgreSQL catalog, never written in the file, so adding a
table is one entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from arb_pipeline import catalog_file, settings
from arb_pipeline.catalog_file import BOOTSTRAP_SCHEMAS, DELETE_POLICIES, MIRROR, POSTPROCESSES, SHIPPED_ONLY
from arb_pipeline.errors import SchemaError
from arb_pipeline.pg.introspect import Column, TableInfo, read_tables

__all__ = [
    "BOOTSTRAP_SCHEMAS",
    "DELETE_POLICIES",
    "MIRROR",
    "PACKAGED",
    "POSTPROCESSES",
    "SHIPPED_ONLY",
    "Catalog",
    "TableSpec",
    "current_catalog",
    "introspect",
    "load_catalog",
    "parents_first",
    "shipped_columns",
]

PACKAGED = Path(__file__).with_name("catalogs") / "transapp.toml"


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


@dataclass(frozen=True)
class Catalog:
    """One catalog file, read and checked (``load_catalog``)."""

    path: Path
    name: str
    prefix: str  # every table name starts with it; asset names and messages drop it
    bootstrap_schema: str | None  # app tables the project creates on an empty database
    postprocess: str | None  # the receiver's derivations, by name
    specs: tuple[TableSpec, ...]  # in file order

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def partial_specs(self) -> tuple[TableSpec, ...]:
        return tuple(s for s in self.specs if s.in_partials)

    @property
    def partial_tables(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.partial_specs)

    @property
    def complete_tables(self) -> tuple[str, ...]:
        return self.table_names

    @property
    def mirrored(self) -> frozenset[str]:
        return frozenset(s.name for s in self.specs if s.delete_policy == MIRROR)

    def spec(self, name: str) -> TableSpec:
        for s in self.specs:
            if s.name == name:
                return s
        raise SchemaError(
            f"table {name} is not in the catalog {self.path}; add a [[table]] entry for it there "
            "(the same file on both servers)"
        )

    def tables_of(self, kind: str) -> tuple[str, ...]:
        """The tables a ``partial`` or ``complete`` backup carries."""
        return self.partial_tables if kind == "partial" else self.complete_tables

    def short_name(self, table: str) -> str:
        """The table's name without the app's prefix, for asset keys and messages."""
        return table.removeprefix(self.prefix)


def load_catalog(path: str | os.PathLike) -> Catalog:
    """The catalog file at ``path``, checked: a ConfigError names the file, line and fix."""
    path = Path(path)
    app, tables = catalog_file.read(path)
    return Catalog(
        path=path,
        name=app["name"],
        prefix=app["table_prefix"],
        bootstrap_schema=app.get("bootstrap_schema"),
        postprocess=app.get("postprocess"),
        specs=tuple(
            TableSpec(
                t["name"],
                cursor=t.get("cursor"),
                media_column=t.get("media_column"),
                excluded=tuple(t.get("excluded", ())),
                delete_policy=t.get("delete_policy", SHIPPED_ONLY),
            )
            for t in tables
        ),
    )


_CACHE: dict[tuple[str, int], Catalog] = {}


def current_catalog() -> Catalog:
    """The catalog of ``ARB_CATALOG`` (default: the packaged TranSapp one), read again
    only when the file's path or modification time changes."""
    path = Path(settings.CATALOG.read() or PACKAGED).resolve()
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise settings.SettingError(
            settings.CATALOG.name, f"ARB_CATALOG={str(path)!r}: {exc.strerror}", settings.CATALOG.hint()
        ) from None
    if key not in _CACHE:
        _CACHE.clear()  # one catalog in use at a time; an edited file replaces the old entry
        _CACHE[key] = load_catalog(path)
    return _CACHE[key]


def _path_of_current() -> str:
    """The current catalog's file, for an error message (never raising itself)."""
    try:
        return str(current_catalog().path)
    except Exception:  # noqa: BLE001 - a broken file is reported where it is loaded
        return f"(ARB_CATALOG, default {PACKAGED})"


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
            f"apply the migrations (`arb migrate`) or remove the entry from the catalog {_path_of_current()}"
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
            f"which the database does not have; fix its [[table]] entry in the catalog {_path_of_current()}"
        )
    return tuple(c for c in info.columns if c.name not in excluded)
