"""Inbox retention (promise 4: nothing deleted that wasn't loaded).

Plain Python, no Dagster. There is no retention asset: after the receiver's load assets
have loaded a partition's backups, they call ``receive.inbox.apply_retention_after_load``,
which runs ``load_ledger``, ``plan_retention`` and ``apply_retention`` (a failure there is
logged and never fails the load). The disk guard that stops loads on a full volume is
ops/disk_guard.py.

The inbox holds ``<inbox>/<kind>/<backup_id>/`` folders (kind: partial | complete), each
committed by its ``manifest.json`` (written last). Retention looks at nothing else: only
the direct children of ``<inbox>/partial`` and ``<inbox>/complete``. The quarantine folder,
stray files and any other folder are never listed, so never deleted.

Rules, for each folder ``<inbox>/<kind>/<name>``:

1. A symlink, a file, a name that is a temporary upload name (``.<name>.<hex>.part``),
   or a folder whose name is not a backup id of its kind (``<kind>-<partition key>-<unique>``)
   is kept: it is not a backup folder (another program's folder is never touched).
2. With a ``manifest.json`` (a published backup), the folder is deleted only if all hold:

   a. the manifest is a regular file (not a link), parses and names this folder (its kind
      and backup_id match the path), and the folder holds nothing but the files it lists,
      the folders they are in and temporary upload names (a folder holding anything else
      is kept: retention deletes only what the pipeline wrote);
   b. the backup is in the receiver's ledger ``arb_loaded_backup`` (outcome loaded or
      superseded) AND the sha256 of the manifest.json bytes equals the ledger's
      ``manifest_sha256``: a different manifest under an id that was loaded (a re-sent or
      replaced backup) was not loaded, so it is kept;
   c. it is older than its kind's limit, measured from its data window's end
      (``window_end``, sender's clock) to ``now``: partial ``partial_days`` (1 day),
      complete ``complete_days`` (BKPS_LIFETIME, 4 days by default);
   d. for a complete: it is not the newest loaded complete in the inbox (by snapshot
      time), which is always kept, however old, so a complete to restore from remains.

   Otherwise it is kept with its reason ("not loaded" for a backup missing from the
   ledger, whatever its age).
3. Without a ``manifest.json`` (an upload in progress or interrupted), the folder is
   kept until it is stale: nothing in it (the folder, its sub-folders and files) was
   modified for ``stale_days`` (2 days). A stale folder is deleted only if it holds
   nothing but temporary upload names (``.<name>.<hex>.part``) and folders (its name being a
   backup id, rule 1): an
   abandoned upload, which no reader could ever load. A folder holding files under
   their final names but no manifest is kept whatever its age (its data was never
   loaded; an admin decides).

Deleting (``apply_retention``) re-checks each folder right before removing it: the path
must be a real folder (not a symlink) directly inside ``<inbox>/<kind>/``; it is first
renamed to a temporary name in the same folder (so readers ignore it and no upload
lands in it), then its manifest hash must still be the one that was matched against the
ledger (an abandoned upload must still hold only temporary names and be unchanged since
planning); if the check fails the rename is undone and the folder kept. Every deletion
and every refusal is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from arb_pipeline.errors import ArbError
from arb_pipeline.ops.inbox_folders import (
    is_backup_name,
    newest_mtime,
    only_temporary_names,
    unlisted_entries,
)
from arb_pipeline.package.backup_id import KINDS
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest, ManifestError
from arb_pipeline.transport.base import TEMP_PREFIX, TEMP_SUFFIX

log = logging.getLogger(__name__)

PARTIAL_DAYS = 1
COMPLETE_DAYS = 4  # BKPS_LIFETIME in the original
STALE_UPLOAD_DAYS = 2

# Keep reasons (the start of the reason text; details may follow).
NOT_LOADED = "not loaded"
HASH_MISMATCH = "manifest differs from the loaded one"
TOO_YOUNG = "younger than the retention limit"
NEWEST_COMPLETE = "newest loaded complete"
NOT_A_BACKUP_FOLDER = "not a backup folder"
BAD_MANIFEST = "unreadable manifest"
FOREIGN_FILES = "holds files the backup does not list"
UPLOAD_IN_PROGRESS = "upload in progress"
INCOMPLETE_UPLOAD = "files but no manifest"
ABANDONED_UPLOAD = "abandoned upload"


class RetentionError(ArbError):
    """Retention was asked something unsafe (the message says what)."""


@dataclass(frozen=True)
class LedgerEntry:
    """One row of arb_loaded_backup."""

    backup_id: str
    kind: str
    partition_key: str
    sender_id: str
    manifest_sha256: str
    snapshot_time: datetime
    window_start: datetime
    window_end: datetime
    outcome: str  # loaded | superseded
    rows_in_backup: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    loaded_at: datetime | None = None


@dataclass(frozen=True, eq=False)
class Candidate:
    """One entry of ``<inbox>/<kind>/`` as retention saw it when planning."""

    kind: str
    name: str  # the folder name: the backup_id for a published backup
    path: Path
    manifest: Manifest | None = None
    manifest_sha256: str | None = None  # of the manifest.json bytes, when there is one
    newest_mtime: float | None = None  # for folders without manifest: newest mtime inside

    @property
    def abandoned(self) -> bool:
        """A folder without manifest (deleted only as an abandoned upload)."""
        return self.manifest_sha256 is None

    def describe(self) -> str:
        if self.manifest is None:
            return f"{self.kind}/{self.name} (no manifest)"
        m = self.manifest
        return (
            f"{self.kind}/{self.name} "
            f"(window end {m.window_end.isoformat()}, snapshot {m.snapshot_time.isoformat()})"
        )


@dataclass
class RetentionPlan:
    delete: list[Candidate] = field(default_factory=list)
    keep: list[tuple[Candidate, str]] = field(default_factory=list)

    def kept_reason(self, name: str) -> str | None:
        return next((reason for c, reason in self.keep if c.name == name), None)

    def summary(self) -> str:
        return f"{len(self.delete)} to delete, {len(self.keep)} kept"


# -- the ledger -----------------------------------------------------------------------

_LEDGER_COLUMNS = (
    "backup_id",
    "kind",
    "partition_key",
    "sender_id",
    "manifest_sha256",
    "snapshot_time",
    "window_start",
    "window_end",
    "outcome",
    "rows_in_backup",
    "rows_written",
    "rows_deleted",
    "loaded_at",
)


def load_ledger(conn) -> dict[str, LedgerEntry]:
    """Every backup the receiver loaded (or found superseded), by backup_id."""
    rows = conn.execute(f"SELECT {', '.join(_LEDGER_COLUMNS)} FROM arb_loaded_backup").fetchall()
    return {row[0]: LedgerEntry(*row) for row in rows}


# -- planning -------------------------------------------------------------------------


def manifest_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_retention(
    inbox_root: Path | str,
    loaded: dict[str, LedgerEntry],
    now: datetime,
    *,
    partial_days: float = PARTIAL_DAYS,
    complete_days: float = COMPLETE_DAYS,
    stale_days: float = STALE_UPLOAD_DAYS,
) -> RetentionPlan:
    """Decide, without changing anything, which inbox folders may go (rules: module docstring).

    ``now`` must be timezone-aware. Reads the inbox listing and the manifests only.
    """
    if now.tzinfo is None:
        raise RetentionError("plan_retention needs a timezone-aware 'now' (use datetime.now(timezone.utc))")
    for label, days in (
        ("partial_days", partial_days),
        ("complete_days", complete_days),
        ("stale_days", stale_days),
    ):
        if not days >= 0:
            raise RetentionError(f"retention {label}={days!r} must be a number of days >= 0")
    limits = {"partial": timedelta(days=partial_days), "complete": timedelta(days=complete_days)}
    root = Path(inbox_root)
    plan = RetentionPlan()
    eligible: list[Candidate] = []  # loaded, hash matches: age and newest-complete decide

    for kind in KINDS:
        kind_dir = root / kind
        if kind_dir.is_symlink() or not kind_dir.is_dir():
            continue
        for name in sorted(os.listdir(kind_dir)):
            path = kind_dir / name
            if path.is_symlink() or not path.is_dir() or not is_backup_name(kind, name):
                plan.keep.append(
                    (
                        Candidate(kind, name, path),
                        f"{NOT_A_BACKUP_FOLDER} (a symlink, a file, a temporary name or a "
                        f"name that is not a {kind} backup id): retention leaves it alone",
                    )
                )
                continue
            manifest_path = path / MANIFEST_NAME
            if not manifest_path.exists() and not manifest_path.is_symlink():
                cand = Candidate(kind, name, path, newest_mtime=newest_mtime(path))
                plan_unpublished(plan, cand, now, stale_days)
                continue
            try:
                if manifest_path.is_symlink() or not manifest_path.is_file():
                    raise OSError("manifest.json is a link or not a file")
                data = manifest_path.read_bytes()
                manifest = Manifest.from_json(data)
            except (OSError, ManifestError) as exc:
                plan.keep.append((Candidate(kind, name, path), f"{BAD_MANIFEST}: {exc}"))
                continue
            cand = Candidate(kind, name, path, manifest=manifest, manifest_sha256=manifest_sha256(data))
            if manifest.kind != kind or manifest.backup_id != name:
                plan.keep.append(
                    (cand, f"{BAD_MANIFEST}: it names {manifest.kind}/{manifest.backup_id}, not this folder")
                )
                continue
            unlisted = unlisted_entries(path, manifest)
            if unlisted:
                plan.keep.append((cand, f"{FOREIGN_FILES} ({', '.join(unlisted[:3])}): an admin decides"))
                continue
            entry = loaded.get(name)
            if entry is None:
                plan.keep.append((cand, NOT_LOADED))
            elif entry.manifest_sha256 != cand.manifest_sha256:
                plan.keep.append(
                    (
                        cand,
                        f"{HASH_MISMATCH} (sha256 {cand.manifest_sha256[:12]}…, ledger "
                        f"{entry.manifest_sha256[:12]}…): this version was not loaded",
                    )
                )
            else:
                eligible.append(cand)

    completes = [c for c in eligible if c.kind == "complete"]
    newest = max(
        completes, key=lambda c: (c.manifest.snapshot_time, c.manifest.window_end, c.name), default=None
    )
    for cand in eligible:
        limit = limits[cand.kind]
        age = now - cand.manifest.window_end
        if cand is newest:
            plan.keep.append((cand, f"{NEWEST_COMPLETE}: always kept"))
        elif age <= limit:
            plan.keep.append(
                (cand, f"{TOO_YOUNG} ({_days(limit)} for a {cand.kind}; window ended {_days(age)} ago)")
            )
        else:
            plan.delete.append(cand)
    return plan


def plan_unpublished(plan: RetentionPlan, cand: Candidate, now: datetime, stale_days: float) -> None:
    """A folder without manifest: keep it unless it is a stale, temporary-names-only upload."""
    idle = timedelta(seconds=max(0.0, now.timestamp() - (cand.newest_mtime or 0.0)))
    if idle <= timedelta(days=stale_days):
        plan.keep.append((cand, f"{UPLOAD_IN_PROGRESS}: no manifest yet, last change {_days(idle)} ago"))
    elif not only_temporary_names(cand.path):
        plan.keep.append(
            (
                cand,
                f"{INCOMPLETE_UPLOAD}: an interrupted upload holding files under their final "
                "names was never loaded; kept for an admin to resend or remove",
            )
        )
    else:
        plan.delete.append(cand)


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} day(s)" if days < 10 else f"{days:.0f} days"


# -- deleting -------------------------------------------------------------------------


def apply_retention(plan: RetentionPlan, inbox_root: Path | str) -> list[Path]:
    """Delete the plan's folders, each re-checked right before; return the deleted paths.

    A folder that fails a check (outside ``<inbox>/<kind>/``, a symlink, a manifest that
    changed since planning, an upload that resumed) is kept and the refusal logged.
    """
    root = Path(inbox_root)
    deleted: list[Path] = []
    for cand in plan.delete:
        try:
            if _delete_one(cand, root):
                deleted.append(cand.path)
        except OSError as exc:
            log.error("retention: could not delete %s: %s; kept", cand.path, exc)
    return deleted


def _delete_one(cand: Candidate, root: Path) -> bool:
    path = cand.path
    problem = _unsafe_path(path, root, cand)
    if problem:
        log.error("retention: refusing to delete %s: %s", path, problem)
        return False
    if cand.abandoned and newest_mtime(path) > (cand.newest_mtime or 0.0):
        log.warning("retention: %s changed since planning (an upload resumed?); kept", path)
        return False
    # Rename first: readers ignore temporary names, and nothing can be written into the
    # folder under its backup path while we check and delete it.
    hidden = path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}.deleting{TEMP_SUFFIX}")
    os.rename(path, hidden)
    problem = _changed(cand, hidden)
    if problem:
        os.rename(hidden, path)
        log.warning("retention: %s %s since planning; kept", path, problem)
        return False
    try:
        shutil.rmtree(hidden)
    except OSError as exc:
        log.error(
            "retention: deleting %s (renamed %s) failed half way: %s; remove the rest by hand",
            path,
            hidden.name,
            exc,
        )
        raise
    if cand.abandoned:
        log.info(
            "retention: deleted %s %s (no manifest, only temporary upload files)", ABANDONED_UPLOAD, path
        )
    else:
        log.info("retention: deleted loaded backup %s", cand.describe())
    return True


def _unsafe_path(path: Path, root: Path, cand: Candidate) -> str | None:
    if cand.kind not in KINDS:
        return f"kind {cand.kind!r} is not one of {', '.join(KINDS)}"
    if path.name != cand.name or not is_backup_name(cand.kind, path.name):
        return "the path is not a backup folder name"
    try:
        root_real = root.resolve(strict=True)
        kind_dir = root_real / cand.kind
        if kind_dir.is_symlink():
            return f"{kind_dir} is a symlink"
        if path.is_symlink():
            return "it is a symlink (retention never follows links)"
        if not path.is_dir():
            return "it is not a folder"
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return f"cannot resolve it: {exc}"
    if real.parent != kind_dir:
        return f"it is not directly inside {kind_dir}"
    return None


def _changed(cand: Candidate, folder: Path) -> str | None:
    """Why the (renamed) folder is no longer what was planned for deletion, or None."""
    if folder.is_symlink() or not folder.is_dir():
        return "was replaced by something that is not a folder"
    manifest_path = folder / MANIFEST_NAME
    if cand.abandoned:
        if manifest_path.exists() or manifest_path.is_symlink() or not only_temporary_names(folder):
            return "received files or a manifest"
        return None
    try:
        if manifest_path.is_symlink():
            return "has a link for a manifest"
        current = manifest_sha256(manifest_path.read_bytes())
    except OSError:
        return "lost its manifest"
    if current != cand.manifest_sha256:
        return "has a different manifest (not the one loaded)"
    if unlisted_entries(folder, cand.manifest):
        return f"received files the backup does not list ({FOREIGN_FILES})"
    return None
