"""Checks run on the receiver right after a load, with no connection to the sender.

Complete backups: parity with the backup
----------------------------------------
The expected row count and order-independent digest of each table (``rowhash``) come
from the backup's own table file: the load digests each staged table (typed by the
receiver, in the file's column order, with the receiver-local digest: both sides are
computed here, with the same types) while it has it staged, and hands the figures over
in its LoadResult (``TableLoad.fingerprint``). A manifest that carries the sender's own
digests (``ARB_COMPLETE_FINGERPRINTS=1``: computed by the sender's server in the backup's
snapshot, a second pass over every row there) is checked against those instead, which
also proves the file equals the snapshot and the receiver's types reproduce its values.
After the load the receiver computes the same over its table and compares.

Rows that partials newer than the complete wrote (``arb_synced_at`` after the complete's
snapshot) legitimately differ from the snapshot, so they are left out on both sides (and
rows no backup wrote, on the receiver's): the receiver side is "rows at the complete's
version or older". When no newer row exists, the receiver has every column of the file
and an expected digest is at hand, the check is one aggregate query. Otherwise (a re-check
of a backup loaded earlier has no LoadResult figures), and to name the first differing
keys when the digests differ, the backup's own table file (still in the inbox) is staged
into a temporary table typed by the receiver and compared with the table key by key, in
the database.

Partial backups: rows in the manifest = rows applied
----------------------------------------------------
Every row of the backup's files is on the receiver at the backup's version or newer
(the file is staged again; partials are small). A superseded partial passes: a newer
complete holds everything it had.

Plain Python; the receiver's load assets report these as asset checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from arb_pipeline.catalog import introspect, parents_first
from arb_pipeline.load.apply import LoadResult
from arb_pipeline.load.deletes import VERSION_COLUMN, referrers, still_referenced_guard
from arb_pipeline.load.merge import receiver_only_columns
from arb_pipeline.load.staging import StagingError, stage_table
from arb_pipeline.ops.parity import CHANGED, EXTRA, MISSING
from arb_pipeline.package.manifest import FileEntry, Manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.pg.rowhash import (
    LOCAL_HASH_ALGORITHM,
    ROW_HASH_ALGORITHM,
    Fingerprint,
    canonical_text_settings,
    local_fingerprint,
    relation_fingerprint,
    row_hash_sql,
)

MAX_KEYS = 10
STAGE = "arb_check_stage"
OLDER = "older on receiver"


@dataclass
class TableCheck:
    table: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    first_keys: list[dict[str, Any]] = field(default_factory=list)


def _fmt_key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in key.items())


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)


def _t(table: str) -> str:
    return f"public.{quote_ident(table)}"


def _pk_match(pk, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{quote_ident(k)} = {right}.{quote_ident(k)}" for k in pk)


def _transaction(conn):
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn.transaction(force_rollback=True)  # temp tables and settings go with it


def _stage(conn, backup_dir: Path, entry: FileEntry, info) -> None:
    stage_table(conn, backup_dir, entry, info, sql.Identifier(STAGE), temporary=True)


# --------------------------------------------------------------------------- partials


def _newer_complete(conn, manifest: Manifest, load: LoadResult) -> str | None:
    """The complete that supersedes this backup on the receiver, if any: then its rows may
    rightly be gone or newer (a re-check of an old backup), so it is not compared."""
    if load.outcome == "superseded":
        return load.superseded_by
    row = conn.execute(
        "SELECT backup_id FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = 'loaded' "
        "AND snapshot_time > %s ORDER BY snapshot_time DESC LIMIT 1",
        (manifest.snapshot_time,),
    ).fetchone()
    return row[0] if row else None


def check_partial(
    dsn: str, backup_dir: Path, manifest: Manifest, load: LoadResult, shown: list[str] | None = None
) -> dict[str, TableCheck]:
    """One check per table file of a partial: every row is on the receiver at its version
    or newer. With ``shown``, one check per table of that list instead, which also
    covers the FK parents the partial carried for it (they have no asset of their own)."""
    files = manifest.table_files()
    raw = {}
    with connect(dsn, autocommit=True, application_name="arb_check") as conn:
        newer = _newer_complete(conn, manifest, load)
        if newer:
            return {
                t: TableCheck(
                    t, True, f"superseded by complete {newer}: nothing to check", {"rows_in_manifest": f.rows}
                )
                for f in files
                for t in [f.table]
                if shown is None or t in shown
            }
        infos = introspect(conn, [f.table for f in files])
        for entry in files:
            raw[entry.table] = _partial_table(conn, Path(backup_dir), manifest, entry, infos[entry.table])
    if shown is None:
        return raw
    out = {}
    for table in shown:
        if table not in raw:
            continue
        todo, ancestors = [table], set()
        while todo:
            for fk in infos[todo.pop()].foreign_keys:
                if fk.ref_table in raw and fk.ref_table != table and fk.ref_table not in ancestors:
                    ancestors.add(fk.ref_table)
                    todo.append(fk.ref_table)
        own, bad = raw[table], [raw[a] for a in sorted(ancestors) if not raw[a].passed]
        text = own.description
        if bad:
            text += "; FK parent table(s) not applied: " + "; ".join(b.description for b in bad)
        elif ancestors:
            text += f"; its {len(ancestors)} FK parent table(s) in the backup are applied too"
        out[table] = TableCheck(
            table,
            own.passed and not bad,
            text,
            {**own.metadata, "parent_tables": len(ancestors)},
            own.first_keys + [k for b in bad for k in b.first_keys],
        )
    return out


def _partial_table(conn, backup_dir: Path, manifest: Manifest, entry: FileEntry, info) -> TableCheck:
    pk = entry.primary_key
    meta: dict[str, Any] = {"rows_in_manifest": entry.rows}
    if not entry.rows:  # verified empty (package/verify.py): no row to look for
        return TableCheck(entry.table, True, "no rows in this backup", {**meta, "rows_applied": 0})
    with _transaction(conn):
        try:
            _stage(conn, backup_dir, entry, info)
        except StagingError as exc:
            return TableCheck(entry.table, False, str(exc), meta)
        applied = conn.execute(
            f"SELECT count(*) FROM {STAGE} s JOIN {_t(entry.table)} t ON {_pk_match(pk, 's', 't')} "
            f"WHERE t.{quote_ident(VERSION_COLUMN)} >= %s",
            (manifest.snapshot_time,),
        ).fetchone()[0]
        meta.update(rows_staged=entry.rows, rows_applied=applied)
        if applied == entry.rows:
            return TableCheck(
                entry.table,
                True,
                f"{applied} of {entry.rows} rows on the receiver at this backup's version or newer",
                meta,
            )
        keys = ", ".join(f"s.{quote_ident(k)}" for k in pk)
        rows = conn.execute(
            f"SELECT {keys}, t.{quote_ident(pk[0])} IS NULL FROM {STAGE} s "
            f"LEFT JOIN {_t(entry.table)} t ON {_pk_match(pk, 's', 't')} "
            f"WHERE t.{quote_ident(pk[0])} IS NULL OR t.{quote_ident(VERSION_COLUMN)} IS NULL "
            f"OR t.{quote_ident(VERSION_COLUMN)} < %s ORDER BY {keys} LIMIT {MAX_KEYS}",
            (manifest.snapshot_time,),
        ).fetchall()
    first = [
        {
            "table": entry.table,
            "kind": MISSING if r[-1] else OLDER,
            "key": {k: _plain(v) for k, v in zip(pk, r[:-1], strict=True)},
        }
        for r in rows
    ]
    described = "; ".join(f"{_fmt_key(d['key'])} {d['kind']}" for d in first)
    return TableCheck(
        entry.table,
        False,
        f"{entry.table}: only {applied} of the manifest's {entry.rows} rows are on "
        f"the receiver at backup {manifest.backup_id}'s version or newer; first "
        f"keys: {described}",
        meta,
        first,
    )


# --------------------------------------------------------------------------- completes


def check_complete(dsn: str, backup_dir: Path, manifest: Manifest, load: LoadResult) -> dict[str, TableCheck]:
    """One parity check per table file of a complete, against the manifest's sender digests
    or, without them, the digests the load took of the staged table files."""
    files = manifest.table_files()
    out = {}
    with connect(dsn, autocommit=True, application_name="arb_check") as conn:
        newer = _newer_complete(conn, manifest, load)
        if newer:
            return {
                f.table: TableCheck(
                    f.table,
                    True,
                    f"superseded by complete {newer}: not compared",
                    {"rows_in_manifest": f.rows},
                )
                for f in files
            }
        infos = introspect(conn, [f.table for f in files])
        by_table = {f.table: f for f in files}
        staged = {t.table: t.fingerprint for t in load.tables if t.fingerprint is not None}
        for table in parents_first(infos):
            out[table] = _complete_table(
                conn,
                Path(backup_dir),
                manifest,
                by_table[table],
                infos[table],
                referrers(infos, table),
                staged.get(table),
            )
    return out


def _complete_table(
    conn, backup_dir: Path, manifest: Manifest, entry: FileEntry, info, refs, of_file: Fingerprint | None
) -> TableCheck:
    """``of_file``: the digest the load took of the staged table file, used when the manifest
    carries no sender digest (then the file is what the table is compared with)."""
    table, pk, fp = entry.table, entry.primary_key, entry.fingerprint
    if fp is not None and fp.algorithm != ROW_HASH_ALGORITHM:
        return TableCheck(
            table,
            False,
            f"{table}: the manifest's fingerprint uses {fp.algorithm!r}, this receiver "
            f"computes {ROW_HASH_ALGORITHM!r}: upgrade arb_pipeline on the older side",
            {"rows_in_manifest": entry.rows},
        )
    columns = [c.name for c in entry.columns]
    own = receiver_only_columns(info)
    comparable = [c for c in columns if c in set(info.column_names) and c not in own]
    left_out = [c for c in columns if c not in comparable]
    snap = manifest.snapshot_time
    v = quote_ident(VERSION_COLUMN)
    # Rows no backup wrote are not the sender's (the complete claimed every row it holds): the
    # receiver's own history, kept by the load (apply.py), is left out like newer rows.
    at_or_before = f"t.{v} <= %s"
    meta: dict[str, Any] = {"rows_in_manifest": entry.rows}
    if fp is not None:
        meta["digest_in_manifest"] = fp.digest
        expected_fp, source = Fingerprint(fp.rows, fp.digest), "the sender's snapshot"
    else:
        expected_fp, source = of_file, "the backup's table file"
        if of_file is not None:
            meta["digest_of_file"] = of_file.digest
    with _transaction(conn), canonical_text_settings(conn):
        newer = conn.execute(f"SELECT count(*) FROM {_t(table)} t WHERE t.{v} > %s", (snap,)).fetchone()[0]
        meta["newer_rows_left_out"] = newer
        if not left_out and not newer and expected_fp is not None:
            if expected_fp.algorithm == LOCAL_HASH_ALGORITHM:  # the load's digest of the staged file
                types = {c.name: c.type for c in info.columns}
                mine = local_fingerprint(
                    conn, _t(table), comparable, [types[c] for c in comparable], at_or_before, (snap,)
                )
            else:
                mine = relation_fingerprint(conn, _t(table), comparable, at_or_before, (snap,))
            meta.update(rows_on_receiver=mine.rows, digest_on_receiver=mine.digest, method="fingerprint")
            if mine == expected_fp:
                return TableCheck(
                    table,
                    True,
                    f"{mine.rows} rows equal to {source} (digest {mine.digest})",
                    meta,
                )
        # The file, staged as the receiver types it: compare key by key.
        try:
            _stage(conn, backup_dir, entry, info)
        except (StagingError, psycopg.Error, OSError) as exc:
            return TableCheck(
                table, False, f"{table}: can't stage the backup's table file to compare: {exc}", meta
            )
        meta["method"] = "staged"
        notes = []
        lossy = False
        if fp is not None:  # the sender's digest: do the receiver's types reproduce its values?
            staged = relation_fingerprint(conn, STAGE, columns)
            lossy = (staged.rows, staged.digest) != (fp.rows, fp.digest)
        if lossy:
            notes.append(
                f"the staged file's digest {staged.digest} is not the manifest's {fp.digest}: the "
                "receiver's column types don't reproduce the sender's values"
            )
        if left_out:
            notes.append(f"column(s) {', '.join(left_out)} not compared (not loaded on the receiver)")
        not_newer = f"NOT EXISTS (SELECT 1 FROM {_t(table)} n WHERE {_pk_match(pk, 'n', 's')} AND n.{v} > %s)"
        keys = ", ".join(quote_ident(k) for k in pk)
        expected = (
            f"SELECT {', '.join('s.' + quote_ident(k) for k in pk)}, {row_hash_sql(comparable, 's')} AS h "
            f"FROM {STAGE} s WHERE {not_newer}"
        )
        # A row the snapshot lacks that the load kept because a kept row references it
        # (load/deletes.py) is not drift: left out like rows no backup wrote.
        unreferenced = still_referenced_guard(refs).as_string(conn)
        compared = (
            f"{at_or_before} AND (EXISTS (SELECT 1 FROM {STAGE} s WHERE {_pk_match(pk, 's', 't')}) "
            f"OR (true{unreferenced}))"
        )
        actual = (
            f"SELECT {', '.join('t.' + quote_ident(k) for k in pk)}, {row_hash_sql(comparable, 't')} AS h "
            f"FROM {_t(table)} t WHERE {compared}"
        )
        diff = (
            f"SELECT {keys}, CASE WHEN a.h IS NULL THEN 'm' WHEN e.h IS NULL THEN 'x' ELSE 'c' END AS kind "
            f"FROM ({expected}) e FULL JOIN ({actual}) a USING ({keys}) WHERE e.h IS DISTINCT FROM a.h"
        )
        counts = dict(
            conn.execute(f"SELECT kind, count(*) FROM ({diff}) d GROUP BY kind", (snap, snap)).fetchall()
        )
        rows = conn.execute(
            f"SELECT * FROM ({diff}) d ORDER BY {keys} LIMIT {MAX_KEYS}", (snap, snap)
        ).fetchall()
        kinds = {"m": MISSING, "x": EXTRA, "c": CHANGED}
        first = [
            {
                "table": table,
                "kind": kinds[r[-1]],
                "key": {k: _plain(x) for k, x in zip(pk, r[:-1], strict=True)},
            }
            for r in rows
        ]
        for d in first:
            if d["kind"] == CHANGED:
                d["columns"] = _changed_columns(conn, table, pk, comparable, tuple(d["key"].values()))
        expected_rows = conn.execute(f"SELECT count(*) FROM {STAGE} s WHERE {not_newer}", (snap,)).fetchone()[
            0
        ]
        receiver_rows = conn.execute(
            f"SELECT count(*) FROM {_t(table)} t WHERE {compared}", (snap,)
        ).fetchone()[0]
    meta.update(
        rows_expected=expected_rows, rows_on_receiver=receiver_rows, differing_keys=sum(counts.values())
    )
    if not counts and not lossy:
        note = "".join(f"; {n}" for n in notes)
        return TableCheck(
            table,
            True,
            f"{receiver_rows} rows equal to {source}"
            f"{f' ({newer} newer rows written by later partials left out)' if newer else ''}"
            f"{note}",
            meta,
        )
    parts = [
        f"{table} differs from {source} in backup {manifest.backup_id}: "
        f"{expected_rows} rows expected, {receiver_rows} on the receiver"
    ]
    if counts:
        parts.append(", ".join(f"{counts[k]} {kinds[k]}" for k in ("m", "x", "c") if counts.get(k)))
        parts.append(
            "first keys: "
            + "; ".join(
                f"{_fmt_key(d['key'])} {d['kind']}"
                + (f" ({', '.join(d['columns'])})" if d.get("columns") else "")
                for d in first
            )
        )
    parts += notes
    return TableCheck(table, False, "; ".join(parts), meta, first)


def _changed_columns(conn, table: str, pk, columns, key: tuple) -> list[str]:
    texts = ", ".join(
        f"ROW(s.{quote_ident(c)})::text IS DISTINCT FROM ROW(t.{quote_ident(c)})::text" for c in columns
    )
    where = " AND ".join(f"s.{quote_ident(k)} = %s" for k in pk)
    row = conn.execute(
        f"SELECT {texts} FROM {STAGE} s JOIN {_t(table)} t ON {_pk_match(pk, 's', 't')} WHERE {where}", key
    ).fetchone()
    return [c for c, differs in zip(columns, row or (), strict=False) if differs]
