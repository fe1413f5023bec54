"""TranSappViz's ``transformed`` marker: a row is transformed once every derivation that
writes it has computed it since it last changed (a load that changes a row resets it).

The last derivations to pass a row set it in their write (``others_done``); rows whose
values did not change are marked afterwards, per table, from the least ``done_through`` of
its derivations (``mark_transformed``), looking only at rows changed since the last time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta

from psycopg import sql

CHANGED = "arb_changed_at"
TRANSFORMED = "transformed"


def has_column(conn, table: str, column: str) -> bool:
    """Does ``table`` have ``column`` (a receiver TranSappViz made may lack one)?"""
    return conn.execute(
        "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = format('public.%%I', %s::text)::regclass "
        "AND attname = %s AND NOT attisdropped)",
        (table, column),
    ).fetchone()[0]


def others_done(
    conn, names: Collection[str], table: str, covering: Mapping[str, Sequence[str]]
) -> str | None:
    """The least done_through of the table's derivations other than ``names`` ('infinity':
    none), or None when one has not run yet or the table has no ``transformed``."""
    if not has_column(conn, table, TRANSFORMED):
        return None
    others = [n for n in covering.get(table, ()) if n not in names]
    if not others:
        return "infinity"
    row = conn.execute(
        "SELECT min(done_through)::text FROM arb_postprocess_state WHERE derivation = ANY(%s) "
        "HAVING count(done_through) = %s",
        (others, len(set(others))),
    ).fetchone()
    return row[0] if row else None


def mark_transformed(conn, table: str, derivations: Sequence[str], margin: timedelta) -> int:
    """Set ``transformed`` on the rows of ``table`` that every derivation writing it has
    computed since their last change (arb_changed_at at or before the least done_through);
    only rows changed since the last time this was done (less ``margin``) are looked at.
    Returns how many."""
    if not has_column(conn, table, TRANSFORMED):
        return 0
    from arb_pipeline.postprocess.engine import LOAD_LOCK  # engine imports this module

    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"arb_pipeline.postprocess.transformed.{table}",)
        )
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))  # loads write these rows
        upto = conn.execute(
            "SELECT min(done_through) FROM arb_postprocess_state WHERE derivation = ANY(%s) "
            "HAVING count(done_through) = %s",
            (list(derivations), len(set(derivations))),
        ).fetchone()
        if upto is None or upto[0] is None:
            return 0  # a derivation of the table has not run yet
        row = conn.execute(
            "SELECT done_through FROM arb_pp_transformed WHERE source_table = %s", (table,)
        ).fetchone()
        t, c, tr = sql.Identifier(table), sql.Identifier(CHANGED), sql.Identifier(TRANSFORMED)
        if row is None:  # the first time: rows no load changed (adopted history) too
            where = sql.SQL("({c} IS NULL OR {c} <= %(upto)s)").format(c=c)
        else:
            where = sql.SQL("{c} > %(low)s AND {c} <= %(upto)s").format(c=c)
        n = conn.execute(
            sql.SQL("UPDATE {t} SET {tr} = true WHERE {tr} IS NOT TRUE AND {w}").format(t=t, tr=tr, w=where),
            {"upto": upto[0], "low": row[0] - margin if row else None},
        ).rowcount
        conn.execute(
            "INSERT INTO arb_pp_transformed (source_table, done_through) VALUES (%s, %s) "
            "ON CONFLICT (source_table) DO UPDATE SET done_through = EXCLUDED.done_through",
            (table, upto[0]),
        )
    return n
