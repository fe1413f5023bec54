"""What PostgreSQL's catalog says about tables: their columns, primary and foreign keys.

One query for columns and one for constraints serve every side: the sender's
extraction, the receiver's verification and load, the parity check and the restore
check. A table that does not exist is simply absent from the result; callers say what
that means for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

INTEGER_KEY_TYPES = frozenset({"smallint", "integer", "bigint"})  # keys cut into ranges


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): e.g. "timestamp with time zone", "character varying(8)"
    not_null: bool
    has_default: bool = False  # a DEFAULT (serial's nextval included) or an identity
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED: computed, never written
    collatable: bool = False  # text-like: ORDER BY follows a collation
    comment: str | None = None  # COMMENT ON COLUMN (the receiver marks its own columns there)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]  # empty: the table has none
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
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.atthasdef OR a.attidentity <> '', a.attgenerated <> '', a.attcollation <> 0,
       col_description(a.attrelid, a.attnum)
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%(tables)s)
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
WHERE n.nspname = %(schema)s AND k.contype IN ('p', 'f') AND c.relname = ANY(%(tables)s)
ORDER BY c.relname, k.conname
"""


def read_tables(conn, tables: Iterable[str], schema: str = "public") -> dict[str, TableInfo]:
    """Columns (in table order), primary key and foreign keys of each of ``tables`` that
    exists in ``schema``; a table that does not exist is not in the result."""
    tables = list(dict.fromkeys(tables))
    if not tables:
        return {}
    params = {"schema": schema, "tables": tables}
    cols: dict[str, list[Column]] = {}
    for rel, name, typ, not_null, has_default, generated, collatable, comment in conn.execute(
        _COLUMNS_SQL, params
    ):
        cols.setdefault(rel, []).append(
            Column(name, typ, not_null, has_default, generated, collatable, comment)
        )
    pks: dict[str, tuple[str, ...]] = {}
    fks: dict[str, list[ForeignKey]] = {}
    for rel, kind, _name, keycols, ref, refcols in conn.execute(_CONSTRAINTS_SQL, params):
        if kind == "p":
            pks[rel] = tuple(keycols)
        else:
            fks.setdefault(rel, []).append(ForeignKey(tuple(keycols), ref, tuple(refcols)))
    return {
        t: TableInfo(t, tuple(cols[t]), pks.get(t, ()), tuple(fks.get(t, ()))) for t in tables if t in cols
    }


def list_tables(conn, *, prefix: str = "", schema: str = "public") -> list[str]:
    """The base tables of ``schema`` whose name starts with ``prefix``, by name, as the
    information schema shows them: only tables the connected role has a privilege on."""
    like = prefix.replace("\\", "\\\\").replace("_", r"\_").replace("%", r"\%") + "%"
    return [
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s AND table_type = 'BASE TABLE' AND table_name LIKE %s "
            "ORDER BY table_name",
            (schema, like),
        )
    ]
