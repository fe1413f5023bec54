"""Identifier quoting, one rule for all SQL: psycopg's.

Every identifier is quoted (TranSapp's names are mixed case). SQL built with
``psycopg.sql`` uses ``sql.Identifier`` (and ``ident_list`` for a column list); SQL
assembled as text (row-hash expressions, psql scripts) uses ``quote_ident``, which gives
the very same quoting as text.
"""

from __future__ import annotations

from collections.abc import Iterable

from psycopg import sql


def quote_ident(*parts: str) -> str:
    """``"name"`` or ``"schema"."name"``, quoted as psycopg's ``sql.Identifier`` quotes it."""
    return sql.Identifier(*parts).as_string()


def ident_list(names: Iterable[str]) -> sql.Composed:
    """``"a", "b", ...``: a column list for ``psycopg.sql`` queries."""
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def key_match(key_columns, left: str = "t", right: str = "s") -> sql.Composable:
    """``left.k1 = right.k1 AND ...`` over a key's columns: how two relations' rows pair up."""
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(
            sql.Identifier(left), sql.Identifier(c), sql.Identifier(right), sql.Identifier(c)
        )
        for c in key_columns
    )
