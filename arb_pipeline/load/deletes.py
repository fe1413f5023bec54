"""What a complete backup deletes on the receiver, and what it never does.

A receiver row is the sender's once a backup wrote it: its ``arb_synced_at`` holds that
backup's snapshot time. A complete removes only such rows, and only those it is newer
than and does not hold itself; rows no backup wrote (the receiver's history from before
the pipeline, rows only it has) stay, except in tables the catalog marks ``mirror``
(``catalog.TableSpec.delete_policy``). ``load/prune.py`` removes them when the operator asks.
"""

from __future__ import annotations

from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.package.manifest import Segment
from arb_pipeline.pg.introspect import ForeignKey, TableInfo
from arb_pipeline.pg.quote import key_match

VERSION_COLUMN = "arb_synced_at"
LSN_VERSION_COLUMN = "arb_synced_lsn"  # change capture's version (load/captured.py)


# A complete writes (or deletes) a row only if it is newer than the row's version: by commit
# LSN when the row has one and the complete was pinned to the slot (``%(pin)s``, its
# capture_lsn; NULL otherwise), else by snapshot time as before capture.
COMPLETE_IS_NEWER = sql.SQL(
    "COALESCE(t.arb_synced_lsn < %(pin)s::pg_lsn, t.arb_synced_at IS NULL OR t.arb_synced_at < %(snap)s)"
)


TOMBSTONES = "arb_captured_delete"  # captured deletes: table, row key, commit LSN (load/captured.py)


def row_key(primary_key, alias: str) -> sql.Composable:
    """A row's key as the tombstones hold it: ROW(primary key)::text, in the receiver's types."""
    return sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(
            sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in primary_key
        )
    )


def deleted_later(table: str, primary_key, alias: str, lsn: sql.Composable) -> sql.Composable:
    """A captured delete of the row ``alias`` committed after ``lsn`` was loaded."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM {tomb} d WHERE d.table_name = {t} AND d.row_key = {key} "
        "AND d.commit_lsn > {lsn})"
    ).format(tomb=sql.Identifier(TOMBSTONES), t=sql.Literal(table), key=row_key(primary_key, alias), lsn=lsn)


def referrers(infos: dict[str, TableInfo], table: str) -> list[tuple[str, ForeignKey]]:
    """The foreign keys of replicated tables that point at ``table``."""
    return [(name, fk) for name, info in infos.items() for fk in info.foreign_keys if fk.ref_table == table]


def delete_absent(conn, info, referrers, stage: sql.Identifier, manifest, load) -> int:
    """Rows the complete's snapshot doesn't have, that a backup wrote, and that no newer backup
    wrote (nor a captured change at or after a pinned complete's position), are gone on the
    sender. Rows no backup wrote stay unless the table is ``mirror``.

    A row still referenced by a row of a replicated table stays too: tables are done
    children first, so a referrer still there is one that stays (unshipped, newer than the
    snapshot, or in it), and deleting its parent would break the reference (the FKs are
    NO ACTION: the commit would fail and no complete would ever load). So a parent a backup
    wrote lives on while a kept row needs it; the next complete after the referrer is gone
    deletes it. (A self-reference is checked against the table before the delete, so a row
    pointing at another absent row keeps it until the next complete.) Derived data
    (TranSappViz's columns; reportinfo, ON DELETE CASCADE) goes with its row.

    After the merge every staged row exists in the table with a version; when the table holds
    no more such rows than were staged, nothing can be absent and the anti-join is skipped."""
    mirror = info.name in current_catalog().mirrored
    v = sql.Identifier(VERSION_COLUMN)
    counted = sql.SQL("true" if mirror else "{} IS NOT NULL").format(v)
    load.rows_owned = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(info.name), counted)
    ).fetchone()[0]
    if load.rows_owned <= load.rows_in_backup:
        return 0
    match = key_match(info.primary_key)
    kept_referrers = still_referenced_guard(referrers)
    shipped = sql.SQL(
        "COALESCE(t.arb_synced_lsn < %(pin)s::pg_lsn, t.{v} IS NULL OR t.{v} <= %(snap)s)"
        if mirror
        else "t.{v} IS NOT NULL AND COALESCE(t.arb_synced_lsn < %(pin)s::pg_lsn, t.{v} <= %(snap)s)"
    ).format(v=v)
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {t} t WHERE {shipped} AND NOT EXISTS (SELECT 1 FROM {s} s WHERE {match}){refs}{held}"
        ).format(
            t=sql.Identifier(info.name),
            shipped=shipped,
            s=stage,
            match=match,
            refs=kept_referrers,
            held=held_ranges_guard(info, load.held_segments),
        ),
        {"snap": manifest.snapshot_time, "pin": manifest.capture_lsn},
    )
    return cur.rowcount


def held_ranges_guard(info: TableInfo, held: tuple[Segment, ...]) -> sql.Composable:
    """`` AND`` the row ``t`` lies in none of the ``held`` segments (complete's delete: the
    staged table lacks their rows, which the table holds)."""
    if not held:
        return sql.SQL("")
    k = sql.SQL("t.{}").format(sql.Identifier(info.primary_key[0]))
    return sql.SQL(" AND NOT ({})").format(
        sql.SQL(" OR ").join(
            sql.SQL("{k} BETWEEN {lo} AND {hi}").format(
                k=k, lo=sql.Literal(s.key_low), hi=sql.Literal(s.key_high)
            )
            for s in held
        )
    )


def still_referenced_guard(refs: list[tuple[str, ForeignKey]]) -> sql.Composable:
    """`` AND NOT EXISTS (...)`` per foreign key in ``refs``: the row ``t`` is referenced by no row."""
    return sql.SQL("").join(
        sql.SQL(" AND NOT EXISTS (SELECT 1 FROM {r} r WHERE {on})").format(
            r=sql.Identifier(name),
            on=sql.SQL(" AND ").join(
                sql.SQL("r.{} = t.{}").format(sql.Identifier(c), sql.Identifier(rc))
                for c, rc in zip(fk.columns, fk.ref_columns, strict=True)
            ),
        )
        for name, fk in refs
    )
