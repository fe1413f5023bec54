"""The guard on mass deletion: a complete that would remove a large share of a table waits.

A complete deletes the rows its snapshot lacks. An empty or truncated complete (a sender
bug, a botched migration, a stolen key) would so empty the receiver, and every check would
pass. So a complete that would delete, in a table the catalog does not mark ``mirror`` (whose
rows come and go by design), more than ``max_share`` of the table's rows (and at least
``min_rows`` of them), or every row of a non-empty table, is *held*: its transaction is rolled
back, ``arb_held_backup`` records it with the rows per table it would delete, and the load
fails with that text (the failed-run alert emails it). The backup stays in the inbox, is not
quarantined and is not retried; partials keep loading meanwhile (a held complete is not in
the ledger, so nothing is superseded by it). ``arb approve BACKUP_ID`` marks it approved and
the next sensor tick loads it, deletions included. The approval names the manifest's sha256:
an altered backup under the same id is not approved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.errors import ArbError, ConfigError
from arb_pipeline.pg.connect import connect
from arb_pipeline.settings import DELETE_GUARD_MIN_ROWS, MAX_DELETE_SHARE


@dataclass(frozen=True)
class DeletionLimits:
    max_share: float = MAX_DELETE_SHARE.default_value  # 1 turns the guard off
    min_rows: int = DELETE_GUARD_MIN_ROWS.default_value  # smaller deletions pass whatever their share


@dataclass(frozen=True)
class MassDeletion:
    table: str
    deleted: int
    before: int  # rows in the table before the complete's deletions

    def describe(self) -> str:
        share = self.deleted / self.before if self.before else 1.0
        left = "empties it" if self.deleted == self.before else f"{share:.0%}"
        return f"{self.table}: {self.deleted} of {self.before} rows ({left})"


class DeletionHeld(ArbError):
    """A complete would delete too much; it waits for an operator. Not the backup's fault as
    far as the receiver can tell (the sender may really have deleted the rows): it stays in
    the inbox, and it is not retried until approved (the sensor reads arb_held_backup)."""

    backup_at_fault = False

    def __init__(self, message: str, deletions: list[MassDeletion]):
        super().__init__(message)
        self.deletions = deletions


def mass_deletions(conn, loads: dict, limits: DeletionLimits | None) -> list[MassDeletion]:
    """The tables whose deletions (done, not yet committed) break ``limits``.

    ``loads[table].rows_owned`` (counted by delete_absent) is at most the table's size, so the
    exact count is only taken when that bound does not already clear the table."""
    if limits is None or limits.max_share >= 1:
        return []
    mirrored = current_catalog().mirrored
    found = []
    for table, load in loads.items():
        deleted = load.rows_deleted
        if not deleted or table in mirrored:
            continue
        owned = load.rows_owned
        if deleted < owned and (deleted <= limits.max_share * owned or deleted < limits.min_rows):
            continue
        remaining = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[
            0
        ]
        before = remaining + deleted
        if remaining == 0 or (deleted > limits.max_share * before and deleted >= limits.min_rows):
            found.append(MassDeletion(table, deleted, before))
    return found


def is_approved(conn, backup_id: str, manifest_sha256: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM arb_held_backup WHERE backup_id = %s AND manifest_sha256 = %s "
            "AND approved_at IS NOT NULL",
            (backup_id, manifest_sha256),
        ).fetchone()
        is not None
    )


def held_error(manifest, deletions: list[MassDeletion], limits: DeletionLimits) -> DeletionHeld:
    tables = "; ".join(d.describe() for d in deletions)
    return DeletionHeld(
        f"complete backup {manifest.backup_id} is held, nothing of it was loaded: it would delete "
        f"{sum(d.deleted for d in deletions)} rows: {tables} (limit: more than "
        f"{limits.max_share:g} of a table and at least {limits.min_rows} rows, or all of them; "
        f"{MAX_DELETE_SHARE.name}, {DELETE_GUARD_MIN_ROWS.name}). If the sender really removed these rows, "
        f"run `arb approve {manifest.backup_id}` and the next sensor tick loads it; if not, fix the "
        "sender and delete the backup from the inbox. Partials keep loading meanwhile",
        deletions,
    )


def record_hold(conn, manifest, manifest_sha256: str, held: DeletionHeld) -> None:
    """Outside the rolled-back load (``conn`` in autocommit): the hold and its counts."""
    conn.execute(
        "INSERT INTO arb_held_backup (backup_id, manifest_sha256, reason) VALUES (%s, %s, %s) "
        "ON CONFLICT (backup_id) DO UPDATE SET reason = EXCLUDED.reason, held_at = now(), "
        "manifest_sha256 = EXCLUDED.manifest_sha256, approved_at = CASE WHEN "
        "arb_held_backup.manifest_sha256 = EXCLUDED.manifest_sha256 THEN arb_held_backup.approved_at END",
        (manifest.backup_id, manifest_sha256, str(held)),
    )


def holds(dsn: str) -> tuple[dict[str, datetime | None], datetime | None]:
    """Every held complete not in the ledger (backup_id -> when approved, None while it waits),
    and the snapshot time of the newest loaded complete (a held one older than it is quarantined)."""
    with connect(dsn) as conn:
        held = {}
        if conn.execute("SELECT to_regclass('arb_held_backup') IS NOT NULL").fetchone()[0]:  # migrated
            held = dict(
                conn.execute(
                    "SELECT h.backup_id, h.approved_at FROM arb_held_backup h "
                    "WHERE NOT EXISTS (SELECT 1 FROM arb_loaded_backup l WHERE l.backup_id = h.backup_id)"
                ).fetchall()
            )
        newest = conn.execute(
            "SELECT max(snapshot_time) FROM arb_loaded_backup WHERE kind = 'complete' AND outcome = 'loaded'"
        ).fetchone()[0]
    return held, newest


def approve(dsn: str, backup_id: str, who: str) -> str:
    """Mark a held complete approved; the message says what happens next."""
    with connect(dsn) as conn:
        if conn.execute("SELECT 1 FROM arb_loaded_backup WHERE backup_id = %s", (backup_id,)).fetchone():
            raise ConfigError(f"backup {backup_id} is already loaded: nothing to approve")
        row = conn.execute(
            "UPDATE arb_held_backup SET approved_at = now(), approved_by = %s WHERE backup_id = %s "
            "RETURNING reason",
            (who, backup_id),
        ).fetchone()
        if row is None:
            raise ConfigError(
                f"backup {backup_id} is not held: only a complete the receiver held for its deletions "
                "can be approved (see the failed load's alert for the backup id)"
            )
    return f"approved {backup_id}; the next sensor tick loads it. It was held because: {row[0]}"
