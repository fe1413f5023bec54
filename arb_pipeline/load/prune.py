"""``arb adopt --prune-unshipped``: remove, once and on request, the receiver rows no backup wrote.

A complete never deletes rows without ``arb_synced_at`` (load/deletes.py), and it sets
that version on every row it holds. So once a complete is loaded, a replicated row without
a version is one the sender's snapshot did not have: history the sender purged before the
pipeline, or a row only the receiver has. An operator who wants the receiver to be the
sender's copy and nothing more removes them here, in one transaction, children first.
Derived values (TranSappViz's columns) go with them, and reportinfo rows (ON DELETE CASCADE).

A row still referenced by a row that stays (one a backup wrote) is kept and counted as
such, as in a complete's deletes: removing it would break that reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from arb_pipeline.catalog import current_catalog, introspect, parents_first
from arb_pipeline.errors import ArbError
from arb_pipeline.load.deletes import VERSION_COLUMN, referrers, still_referenced_guard
from arb_pipeline.pg.connect import connect


class PruneError(ArbError):
    pass


@dataclass
class PrunedTable:
    table: str
    unshipped: int  # rows without arb_synced_at before the prune
    deleted: int = 0

    @property
    def kept(self) -> int:
        return self.unshipped - self.deleted


def prune_unshipped(dsn: str, *, dry_run: bool) -> list[PrunedTable]:
    """Per replicated table, its rows no backup wrote; without ``dry_run``, deleted (all or nothing)."""
    v = sql.Identifier(VERSION_COLUMN)
    with connect(dsn) as conn, conn.transaction():
        newest = conn.execute(
            "SELECT backup_id FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = 'loaded' "
            "ORDER BY snapshot_time DESC LIMIT 1"
        ).fetchone()
        if newest is None:
            raise PruneError(
                "no complete backup has been loaded on this receiver yet: until one is, every row the "
                "sender still has lacks arb_synced_at too and would be removed. Load a complete first "
                "(it arrives daily, or `dagster asset materialize` the receiver's complete partition)"
            )
        infos = introspect(conn, current_catalog().complete_tables)
        order = parents_first(infos)
        out = {
            t: PrunedTable(
                t,
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(sql.Identifier(t), v)
                ).fetchone()[0],
            )
            for t in order
        }
        if dry_run:
            return [out[t] for t in order]
        for table in reversed(order):  # children first: a kept child then keeps its parent
            if not out[table].unshipped:
                continue
            out[table].deleted = conn.execute(
                sql.SQL("DELETE FROM {t} t WHERE t.{v} IS NULL{refs}").format(
                    t=sql.Identifier(table), v=v, refs=still_referenced_guard(referrers(infos, table))
                )
            ).rowcount
    return [out[t] for t in order]
