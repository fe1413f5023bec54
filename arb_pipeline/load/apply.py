"""Loading a verified backup into the receiver's database, all or nothing.

One transaction per backup. Each table's rows are COPYed into a temporary staging
table whose column types are the receiver's own (no type or SQL text from the backup
is ever executed), then merged into the real table by primary key, parents first:

* Versions: every replicated row carries ``arb_synced_at``, the sender snapshot time of
  the backup that last wrote it. A backup writes a row only if its snapshot is newer,
  so backups can arrive in any order, twice, or late, and the newest version wins
  whether or not the app moved the row's timestamp.
* A partial whose snapshot is not newer than the newest loaded complete is
  *superseded*: everything it holds is already in that complete. It is recorded, not
  applied, so a late partial can't resurrect a row the complete deleted.
* A complete also deletes rows absent from its snapshot, but only rows a backup wrote
  (``arb_synced_at`` set) and that it is newer than: rows written by later partials
  stay, and so do rows no backup wrote (history from before the pipeline, rows only the
  receiver has; ``arb adopt --prune-unshipped`` removes those on request), except in
  tables the catalog marks ``mirror``. A complete claims the rows it holds (sets their
  version), so afterwards a row without one is exactly a row the sender doesn't have.
  Readers see the old state or the new, never a mix (MVCC), and never an empty table
  (no TRUNCATE, no swap by rename).
* Only the sender's columns are written. Receiver-only columns survive; where the
  receiver has a ``transformed`` column, a row whose content changed gets
  ``transformed = false``, and where it has ``arb_changed_at`` (the postprocessing
  marker) an inserted or changed row gets ``clock_timestamp()``, so postprocessing
  redoes it. A partial's refresh of an unchanged row's version touches neither.
* The ledger ``arb_loaded_backup`` is written in the same transaction: loading the same
  backup again is a no-op.
* Captured partials (change capture) carry upserts and deletes versioned by commit LSN;
  load/captured.py applies them, and a complete pinned to the slot (``capture_lsn``) guards
  rows by that LSN too (load/deletes.py, ``COMPLETE_IS_NEWER``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import psycopg
from psycopg import sql

from arb_pipeline.capture.chain import EPOCH, gap_reason
from arb_pipeline.catalog import introspect, parents_first
from arb_pipeline.errors import ArbError
from arb_pipeline.load.captured import (
    apply_captured,
    captured_partial_superseded,
    newest_pin,
    prune_tombstones,
)
from arb_pipeline.load.deletes import delete_absent, referrers
from arb_pipeline.load.failures import backup_at_fault, server_message
from arb_pipeline.load.hold import (
    DeletionHeld,
    DeletionLimits,
    held_error,
    is_approved,
    mass_deletions,
    record_hold,
)
from arb_pipeline.load.merge import LOAD_MEMORY, merge
from arb_pipeline.load.narrow import key_ranges, narrow
from arb_pipeline.load.segments import record_digests
from arb_pipeline.load.staging import TableLoad, clear_staging, stage_in_parallel, stage_table
from arb_pipeline.ops.disk_guard import DiskFloor
from arb_pipeline.package.manifest import Manifest
from arb_pipeline.pg.quote import quote_ident

log = logging.getLogger(__name__)


class LoadError(ArbError):
    pass


class CaptureGapError(LoadError):
    """A captured partial from a slot no loaded complete is pinned after (capture/chain.py):
    not at fault, it waits in the inbox until such a complete loads."""


class RowsRejectedError(LoadError):
    """The server refused a verified backup's rows (a value, a key, a reference): the backup
    passed verification, yet it would fail the same way on every retry."""

    backup_at_fault = True


@dataclass
class LoadResult:
    backup_id: str
    kind: str
    outcome: str  # loaded | superseded | already loaded
    tables: list[TableLoad] = field(default_factory=list)
    superseded_by: str | None = None
    # Wall-clock seconds of the load's two parts: "staging" (a complete's parallel sessions,
    # before the transaction) and "transaction" (merges, deletes, commit and its FK checks).
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows_in_backup(self) -> int:
        return sum(t.rows_in_backup for t in self.tables)

    @property
    def rows_written(self) -> int:
        return sum(t.rows_written for t in self.tables)

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted for t in self.tables)


def load_backup(
    conn,
    backup_dir: Path,
    manifest: Manifest,
    manifest_sha256: str,
    *,
    dsn: str | None = None,
    workers: int = 2,
    deletion_limits: DeletionLimits | None = None,
    disk_floor: DiskFloor | None = None,
) -> LoadResult:
    """Apply a verified backup in one transaction. ``conn`` must not be in a transaction.

    With ``dsn``, a complete's tables are staged first by ``workers`` parallel sessions
    (scratch tables, outside the transaction), then merged in the one transaction. With
    ``deletion_limits``, a complete that would delete more is held (load/hold.py). With
    ``disk_floor``, free space is checked again as tables are staged and merged.
    """
    backup_dir = Path(backup_dir)
    conn.autocommit = True
    # Temporary staging tables and hash joins get room so whole tables don't spill to
    # disk in small batches (session-local; temp_buffers only before the first temp table).
    try:
        conn.execute(f"SET temp_buffers = '{LOAD_MEMORY}'")
    except psycopg.errors.InvalidParameterValue:
        pass
    conn.execute(f"SET work_mem = '{LOAD_MEMORY}'")
    # One loader at a time per database, whatever runs it (the Dagster pool also says so).
    conn.execute("SELECT pg_advisory_lock(hashtext('arb_pipeline.load.apply'))")
    staged: dict = {}
    staging_used = False
    t0 = time.perf_counter()  # staging's start, if it stages
    try:
        state = _ledger_state(conn, manifest, manifest_sha256)
        if state is None and manifest.kind == "complete" and dsn:
            clear_staging(conn)
            staging_used = True  # a failed stage_in_parallel leaves tables behind too
            files = manifest.table_files()
            infos = introspect(conn, [f.table for f in files])
            t0 = time.perf_counter()
            staged = stage_in_parallel(
                dsn,
                backup_dir,
                {f.table: f for f in files},
                infos,
                parents_first(infos),
                manifest_sha256[:12],
                workers,
                disk_floor,
                fingerprint=True,
                then=partial(narrow, snapshot_time=manifest.snapshot_time, capture_lsn=manifest.capture_lsn),
                key_ranges=key_ranges(conn, files, infos),
            )
        staging_s, t0 = time.perf_counter() - t0 if staged else 0.0, time.perf_counter()
        with conn.transaction():
            result = _apply(conn, backup_dir, manifest, manifest_sha256, staged, deletion_limits, disk_floor)
        result.seconds.update(staging=staging_s, transaction=time.perf_counter() - t0)
        return result
    except DeletionHeld as held:  # rolled back; recorded so the sensor waits for `arb approve`
        record_hold(conn, manifest, manifest_sha256, held)
        raise
    except psycopg.errors.InsufficientPrivilege as exc:
        raise LoadError(
            f"backup {manifest.backup_id}: the receiver's database role may not do what a load needs: "
            f"{(exc.diag.message_primary or str(exc)).strip()}; nothing was loaded. As the database's "
            "owner, run deploy/sql/receiver-role.sql for this role again (after every migration)"
        ) from exc
    except psycopg.Error as exc:
        # The transaction rolled back, nothing of the backup is applied; load/failures.py
        # decides whether the backup's own data is the cause (quarantine) or not (retry).
        if backup_at_fault(exc):
            raise RowsRejectedError(
                f"backup {manifest.backup_id}: its rows can't be applied: {server_message(exc)}; nothing of "
                f"it was loaded. The backup's data is malformed (check it with `arb inspect`); re-run the "
                f"sender's {manifest.kind} partition {manifest.partition_key} to publish it again"
            ) from exc
        raise LoadError(
            f"backup {manifest.backup_id}: the receiver's database failed the load: {server_message(exc)}; "
            "nothing was loaded and the backup stays in the inbox for the next try"
        ) from exc
    finally:
        if staged or staging_used:
            clear_staging(conn)
        conn.execute("SELECT pg_advisory_unlock(hashtext('arb_pipeline.load.apply'))")


def _ledger_state(conn, manifest: Manifest, manifest_sha256: str) -> str | None:
    """'already loaded' or 'superseded' when the backup needs no staging, else None."""
    done = conn.execute(
        "SELECT manifest_sha256, outcome FROM arb_loaded_backup WHERE backup_id = %s", (manifest.backup_id,)
    ).fetchone()
    if done:
        if done[0] != manifest_sha256:
            raise LoadError(
                f"backup {manifest.backup_id} was already {done[1]} from a different manifest; "
                "a backup id is never reused, so this one was altered: quarantine it"
            )
        return "already loaded"
    newest = _newest_complete(conn)
    if manifest.source == "capture":  # by commit LSN against a pinned complete (load/captured.py)
        verdict = captured_partial_superseded(conn, manifest) if newest else None
        if verdict:
            return "superseded"
        gap = gap_reason(manifest.extra.get(EPOCH), newest_pin(conn), manifest.backup_id)
        if gap:
            raise CaptureGapError(gap)
        if verdict is not None:
            return None
    if not newest:
        return None
    return "superseded" if manifest.snapshot_time <= newest[1] else None


def _newest_complete(conn):
    return conn.execute(
        "SELECT backup_id, snapshot_time FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = "
        "'loaded' ORDER BY snapshot_time DESC LIMIT 1"
    ).fetchone()


def _apply(
    conn,
    backup_dir: Path,
    manifest: Manifest,
    manifest_sha256: str,
    staged: dict,
    limits: DeletionLimits | None,
    floor: DiskFloor | None,
) -> LoadResult:
    state = _ledger_state(conn, manifest, manifest_sha256)
    if state == "already loaded":
        return LoadResult(manifest.backup_id, manifest.kind, state)
    result = LoadResult(manifest.backup_id, manifest.kind, "loaded")
    files = manifest.table_files()
    if state == "superseded":
        result.outcome, result.superseded_by = state, _newest_complete(conn)[0]
        result.tables = [TableLoad(f.table, f.rows or 0) for f in files]
    elif manifest.source == "capture":
        result.tables = apply_captured(conn, backup_dir, manifest, floor)
        for info in introspect(conn, [t.table for t in result.tables]).values():
            _advance_sequences(conn, info)
    else:
        infos = introspect(conn, [f.table for f in files])
        order = parents_first(infos)
        by_table = {f.table: f for f in files}
        names = {}
        for i, table in enumerate(order):
            if manifest.kind == "partial" and not by_table[table].rows:  # verified empty: nothing to merge
                result.tables.append(TableLoad(table, 0))
                continue
            if table in staged:
                name, load = staged[table]
            else:
                name = sql.Identifier(f"arb_stage_{i}")
                load = stage_table(
                    conn,
                    backup_dir,
                    by_table[table],
                    infos[table],
                    name,
                    temporary=True,
                    floor=floor,
                    fingerprint=manifest.kind == "complete",
                )
            t0 = time.perf_counter()
            source = load.changes or name  # the rows the merge acts on, if narrowed while staging
            load.rows_written = merge(conn, by_table[table], infos[table], source, manifest, load)
            load.seconds["merge"] = time.perf_counter() - t0
            if floor:
                floor.check()
            names[table] = name
            result.tables.append(load)
        if manifest.kind == "complete":
            loads = {t.table: t for t in result.tables}
            for table in reversed(order):  # children first
                t0 = time.perf_counter()
                loads[table].rows_deleted = delete_absent(
                    conn, infos[table], referrers(infos, table), names[table], manifest, loads[table]
                )
                loads[table].seconds["delete"] = time.perf_counter() - t0
            held = mass_deletions(conn, loads, limits)
            if held and not is_approved(conn, manifest.backup_id, manifest_sha256):
                raise held_error(manifest, held, limits)
            if manifest.capture_lsn is not None:
                prune_tombstones(conn, manifest.capture_lsn)
            record_digests(conn, manifest.backup_id, result.tables, by_table)
        for table in order:
            _advance_sequences(conn, infos[table])
    conn.execute(
        "INSERT INTO arb_loaded_backup (backup_id, kind, partition_key, sender_id, manifest_sha256, "
        "snapshot_time, window_start, window_end, outcome, rows_in_backup, rows_written, rows_deleted, "
        "capture_lsn) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::pg_lsn)",
        (
            manifest.backup_id,
            manifest.kind,
            manifest.partition_key,
            manifest.sender_id,
            manifest_sha256,
            manifest.snapshot_time,
            manifest.window_start,
            manifest.window_end,
            result.outcome,
            result.rows_in_backup,
            result.rows_written,
            result.rows_deleted,
            manifest.capture.to_lsn if manifest.capture else manifest.capture_lsn,
        ),
    )
    return result


def _advance_sequences(conn, info) -> None:
    """Serial ids: the receiver's sequence ends past the loaded ids (if it ever inserts)."""
    for col in info.primary_key:
        seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (quote_ident(info.name), col)).fetchone()[
            0
        ]
        if seq:
            conn.execute(
                sql.SQL(
                    "SELECT setval(%(seq)s, GREATEST(m, (SELECT last_value FROM {seq}))) "
                    "FROM (SELECT max({c}) AS m FROM {t}) x WHERE m IS NOT NULL"
                ).format(seq=sql.SQL(seq), c=sql.Identifier(col), t=sql.Identifier(info.name)),
                {"seq": seq},
            )
