"""The receiver's side of one backup: find it, check the disk, verify, install media,
load. Plain Python; the receiver's Dagster assets and sensor wrap these.

A backup at fault (it fails verification, its media bundle is bad, the database refuses
its rows) is quarantined with its reason and nothing of it is loaded; a backup the
receiver's schema can't take yet stays in the inbox for a later try. Either way the
media it installed are removed again: a backup that doesn't load leaves nothing behind.
Retention runs after a successful load and deletes only loaded backups.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from arb_pipeline.capture.chain import EPOCH
from arb_pipeline.errors import ArbError
from arb_pipeline.load.apply import LoadResult, load_backup
from arb_pipeline.load.apply import _newest_complete as newest_complete
from arb_pipeline.load.captured import newest_pin
from arb_pipeline.load.hold import DeletionLimits
from arb_pipeline.ops.disk_guard import DiskFloor
from arb_pipeline.ops.retention import apply_retention, load_ledger, plan_retention
from arb_pipeline.package.backup_id import KINDS
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest, ManifestError
from arb_pipeline.package.reader import manifest_bytes
from arb_pipeline.package.schema_check import SchemaPlan, check_schema
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.media import MEDIA_VOLUME, InstallResult, install_media, remove_installed
from arb_pipeline.receive.plausible import check_plausible
from arb_pipeline.receive.quarantine import QuarantineError, quarantine
from arb_pipeline.settings import MAX_MANIFEST_BYTES
from arb_pipeline.transport.base import is_temporary_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    """A published backup in the inbox: its manifest exists (the commit marker)."""

    kind: str
    backup_id: str
    path: Path
    partition_key: str
    snapshot_time: datetime
    manifest_sha256: str
    window: tuple[datetime, datetime] | None = None  # the manifest's [start, end)
    capture_epoch: str | None = None  # a captured partial's slot epoch (capture/chain.py)


@dataclass(frozen=True)
class Unreadable:
    """A published folder that can't be taken: its manifest doesn't parse, or names another
    folder (``at_fault``), or the receiver may not read it (not the backup's fault: its
    own permissions). What happens to it is ``set_aside``, for the sensor and runs alike."""

    kind: str
    backup_id: str  # the folder's name
    path: Path
    error: str
    at_fault: bool = True


@dataclass
class Received:
    load: LoadResult
    manifest: Manifest
    media: InstallResult | None = None
    warnings: list[str] = field(default_factory=list)


def find_published(
    inbox: Path, max_manifest_bytes: int | None = None
) -> tuple[list[Pending], list[Unreadable]]:
    """Every backup folder with a manifest, oldest snapshot first (a complete comes
    before the partials taken after it). Temporary upload names are never touched. No
    folder's content makes this raise: what can't be taken is in the second list."""
    cap = MAX_MANIFEST_BYTES.read() if max_manifest_bytes is None else max_manifest_bytes
    found, bad = [], []
    for kind in KINDS:
        root = Path(inbox) / kind
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if is_temporary_name(folder.name) or not folder.is_dir() or folder.is_symlink():
                continue
            manifest_path = folder / MANIFEST_NAME
            try:
                data = _manifest_bytes(manifest_path, cap)
                if data is None:
                    continue  # still uploading: the manifest comes last
                manifest = Manifest.from_json(data)
            except OSError as exc:
                bad.append(Unreadable(kind, folder.name, folder, _unreadable_file(manifest_path, exc), False))
                continue
            except (ManifestError, ValueError, TypeError, OverflowError) as exc:  # whatever it holds
                bad.append(Unreadable(kind, folder.name, folder, str(exc) or repr(exc)))
                continue
            if manifest.backup_id != folder.name or manifest.kind != kind:
                bad.append(
                    Unreadable(
                        kind,
                        folder.name,
                        folder,
                        f"misnamed folder: manifest says {manifest.kind}/{manifest.backup_id}, "
                        f"folder is {kind}/{folder.name}",
                    )
                )
                continue
            found.append(
                Pending(
                    kind,
                    manifest.backup_id,
                    folder,
                    manifest.partition_key,
                    manifest.snapshot_time,
                    hashlib.sha256(data).hexdigest(),
                    (manifest.window_start, manifest.window_end),
                    manifest.extra.get(EPOCH) if manifest.capture else None,
                )
            )
    found.sort(key=lambda p: (p.snapshot_time, p.kind != "complete", p.backup_id))
    return found, bad


def _manifest_bytes(path: Path, cap: int) -> bytes | None:
    """The manifest's bytes, None while there is none (still uploading: it comes last)."""
    try:
        return manifest_bytes(path, cap)
    except FileNotFoundError:
        return None


def _unreadable_file(path: Path, exc: OSError) -> str:
    return (
        f"the receiver can't read {path} ({exc.strerror or exc}); give the user running the receiver "
        "read access to the folder and its files (the sender's upload sets the modes)"
    )


def set_aside(bad: Unreadable, quarantine_dir: Path) -> str:
    """What the receiver does with a folder ``find_published`` could not take, and the
    message saying so. A backup at fault is quarantined with its reason (moved, never
    deleted); one the receiver can't read may be the receiver's doing, so it stays in the
    inbox until the permissions are fixed."""
    name = f"{bad.kind}/{bad.backup_id}"
    if not bad.at_fault:
        return f"backup {name} was not loaded and stays in the inbox: {bad.error}"
    try:
        where = quarantine(bad.path, Path(quarantine_dir), bad.error)
    except QuarantineError as exc:  # e.g. moved meanwhile by another run; it fails, nothing is lost
        return f"backup {name} was not loaded: {bad.error}. It could not be quarantined: {exc}"
    return f"backup {name} was not loaded: {bad.error} ({quarantined_in(where)})"


def quarantined_in(where: Path) -> str:
    """Where a quarantined backup went and how to bring it back, for the error that reports it."""
    return f"quarantined in {where}; `arb requeue {where.name}` once the cause is fixed"


def newest_pin_of(dsn: str) -> str | None:
    """The newest pinned complete's capture_lsn (load/captured.py), for the sensor's one query a tick."""
    with connect(dsn) as conn:
        return newest_pin(conn)


def loaded_ids(dsn: str) -> dict[str, str]:
    """backup_id -> manifest sha256 of everything in the receiver's ledger."""
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, manifest_sha256 FROM arb_loaded_backup").fetchall())


def receive(
    backup_dir: Path,
    *,
    dsn: str,
    media_dir: Path,
    quarantine_dir: Path,
    min_free_bytes: int = 0,
    deletion_limits: DeletionLimits | None = None,
    disk_floor: DiskFloor | None = None,
) -> Received:
    """Verify and load one backup.

    An error that puts the backup at fault (``ArbError.backup_at_fault``: altered files, a
    bad media bundle, rows the database refuses) quarantines it with the reason and is
    raised again as a VerifyError saying where it went. Any other error leaves the backup
    in the inbox for the next try (the receiver's schema, a setting, the database), or
    waiting for `arb approve` (a complete past ``deletion_limits``: load/hold.py). The
    disk floor (``min_free_bytes``, or a ``disk_floor`` naming its volumes) is checked
    before, and again while media are installed and tables staged and merged.
    """
    backup_dir = Path(backup_dir)
    floor = disk_floor or DiskFloor({"inbox": backup_dir, MEDIA_VOLUME: Path(media_dir)}, min_free_bytes)
    floor.check()
    try:
        return _verify_and_load(backup_dir, dsn, Path(media_dir), deletion_limits, floor)
    except ArbError as exc:
        if not exc.backup_at_fault:
            raise
        where = quarantine(backup_dir, Path(quarantine_dir), str(exc))
        raise VerifyError(
            f"{exc} ({quarantined_in(where)})",
            backup_id=backup_dir.name,
            file=getattr(exc, "file", None),
        ) from exc


def _verify_and_load(
    backup_dir: Path, dsn: str, media_dir: Path, deletion_limits: DeletionLimits | None, floor: DiskFloor
) -> Received:
    manifest = verify_files(backup_dir)
    sha = hashlib.sha256((backup_dir / MANIFEST_NAME).read_bytes()).hexdigest()
    with connect(dsn) as conn:
        check_plausible(manifest, newest_complete=_newest_complete_but(conn, manifest.backup_id))
        plan: SchemaPlan = check_schema(manifest, conn)
        floor = floor.with_database(conn)
        conn.rollback()
        media = None
        bundle = manifest.file("media")
        if bundle is not None:
            media = install_media(backup_dir / bundle.name, manifest.media, media_dir, floor)
        try:
            result = load_backup(
                conn, backup_dir, manifest, sha, dsn=dsn, deletion_limits=deletion_limits, disk_floor=floor
            )
        except BaseException:
            if media:
                remove_installed(media, media_dir)
            raise
    received = Received(result, manifest, media, plan.warnings())
    if media and media.conflicts:
        received.warnings += [
            f"media file {c.name} differs from the one already on the receiver; kept the existing "
            f"file, the new one is at {c.kept_as}"
            for c in media.conflicts
        ]
    return received


def _newest_complete_but(conn, backup_id: str) -> tuple[str, datetime] | None:
    """The newest complete loaded, unless ``backup_id`` is in the ledger (loading it again is a no-op)."""
    if conn.execute("SELECT 1 FROM arb_loaded_backup WHERE backup_id = %s", (backup_id,)).fetchone():
        return None
    return newest_complete(conn)


def apply_retention_after_load(
    inbox_dir: Path, dsn: str, *, partial_days: float, complete_days: float, now: datetime | None = None
) -> list[Path]:
    with connect(dsn) as conn:
        ledger = load_ledger(conn)
    plan = plan_retention(
        inbox_dir,
        ledger,
        now or datetime.now(timezone.utc),
        partial_days=partial_days,
        complete_days=complete_days,
    )
    return apply_retention(plan, inbox_dir)
