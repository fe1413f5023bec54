"""Point-in-time restore: the sender's state at a time T, rebuilt from backups into a new database.

Which backups
-------------
From an inbox-shaped folder (``<dir>/complete/<id>/``, ``<dir>/partial/<id>/``):

1. the newest complete whose snapshot (sender database clock) is at or before T;
2. every partial whose snapshot is newer than that complete (older ones are in it) and
   whose window ends at or before T. A partial of a window that ends after T holds rows
   written after T, so it is never applied: the state restored is the sender's *as of
   the last window end at or before T* (``covered_to``), or of the complete's snapshot
   when no partial ends in between.

The windows must leave no hole between the complete's snapshot and ``covered_to``, and
T must lie less than one window past it, or the restore refuses naming the gap
(``allow_gaps``: a warning). T before the oldest complete is an error naming the oldest
time that can be restored. Every chosen backup is verified (sizes, sha256, row counts)
before the target is touched; one that fails stops the restore with nothing written.

What "the state at T" means
---------------------------
Exactly the sender's state at ``covered_to`` when, as in the tests, nothing was written
between ``covered_to`` and the last applied partial's snapshot, and nothing committed
late. Otherwise, as for the receiver (see extract.py): a row committed up to the
overlap after the timestamp it wrote is only in a *later* window's partial, so it is
missing here; a row updated before T and again between T and that partial's snapshot
keeps its older version; deletes and updates that don't move the row's timestamp (and
tables that travel only in completes) are as of the complete's snapshot. Partial windows
are on the app's clock (the rows' ``timeStamp``), snapshots on the database's.

Which schema
------------
The target gets the receiver's schema (``arb migrate --role receiver``) and the backups
go through the receiver's own loader (load.py), not the sender's schema from the
complete's ``restore.sql``. The loader is the tested path: versioned by snapshot, so
the partials' overlapping re-reads and their order don't matter; it executes no SQL
from a backup (restore.sql would need psql, zstd and the fence of restore_drill.py);
and the result can be checked with ``arb parity`` like any receiver. restore.sql gives
the sender's exact DDL, but only as of the complete, and applying partials on top of
it would need a second, unversioned loader. The receiver's extra columns
(``arb_synced_at``...) and tables are harmless; the replicated tables have the sender's
columns, personal ones (never shipped) empty.

Parity against the backups' own hashes
--------------------------------------
Per table, the expected state is computed from the backup files themselves: the
complete's file staged in the target (its count and digest must equal the manifest's
fingerprint, which the sender computed in its snapshot), overlaid by each partial's file
in snapshot order by primary key, the newest version winning. Its count and digest
(pg/rowhash.py) are compared with the restored table's: ``ok`` or ``DRIFT`` with the first
differing keys (pitr_parity.py). This checks the load against the files and the complete against the
sender; nothing can check the partials' rows against the sender without the sender.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from arb_pipeline.errors import ArbError, ConfigError
from arb_pipeline.load.apply import LoadResult, load_backup
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.package.schema_check import check_schema
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline.pg.connect import connect, describe_dsn
from arb_pipeline.progress import Progress, silent
from arb_pipeline.receive.inbox import find_published
from arb_pipeline.receive.media import InstallResult, install_media
from arb_pipeline.restore.pitr_parity import RestoredTable, check_restored
from arb_pipeline.schema.migrate import apply_migrations
from arb_pipeline.settings import PARTIAL_MINUTES

UTC = timezone.utc


class RestoreError(ArbError):
    """The restore can't be done as asked; the message says why and what to do."""


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; ``Z`` or an offset, or none at all, which means UTC."""
    raw = text.strip()
    try:
        parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise RestoreError(
            f"{text!r} is not an ISO 8601 time: write it like 2026-11-25T10:05:00Z (UTC)"
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True)
class Chosen:
    """A backup on the restore path, with its parsed manifest."""

    path: Path
    manifest: Manifest
    manifest_sha256: str

    @property
    def backup_id(self) -> str:
        return self.manifest.backup_id


@dataclass
class RestorePlan:
    at: datetime
    complete: Chosen
    partials: list[Chosen]
    covered_to: datetime  # the restored state is the sender's as of this time
    warnings: list[str] = field(default_factory=list)

    @property
    def backups(self) -> list[Chosen]:
        return [self.complete, *self.partials]

    def describe(self) -> str:
        c = self.complete.manifest
        lines = [
            f"restore to {_fmt(self.at)}: the sender's state as of {_fmt(self.covered_to)}",
            f"  complete {c.backup_id} (snapshot {_fmt(c.snapshot_time)})",
        ]
        if self.partials:
            first, last = self.partials[0].manifest, self.partials[-1].manifest
            lines.append(
                f"  {len(self.partials)} partial(s), windows {_fmt(first.window_start)} .. "
                f"{_fmt(max(p.manifest.window_end for p in self.partials))} "
                f"({first.backup_id} .. {last.backup_id})"
            )
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _chosen(path: Path) -> Chosen:
    data = (path / MANIFEST_NAME).read_bytes()
    return Chosen(path, Manifest.from_json(data), hashlib.sha256(data).hexdigest())


def plan_restore(inbox: Path, at: datetime | None, *, allow_gaps: bool = False) -> RestorePlan:
    """Choose the backups that rebuild the state at ``at`` (None: the newest time covered)."""
    inbox = Path(inbox)
    if not (inbox / "complete").is_dir():
        raise ConfigError(
            f"{inbox} has no complete/ folder: point --inbox at a folder laid out like the receiver's "
            "inbox (<dir>/complete/<backup id>/, <dir>/partial/<backup id>/)"
        )
    found, unreadable = find_published(inbox)
    warnings = [f"{u.kind}/{u.backup_id} ignored: its manifest can't be read ({u.error})" for u in unreadable]
    completes = [p for p in found if p.kind == "complete"]
    if not completes:
        raise RestoreError(f"no published complete backup in {inbox / 'complete'}: a restore starts from one")
    if at is None:  # the newest time covered: the newest backup of any kind
        newest = max(completes, key=lambda p: p.snapshot_time).snapshot_time
        ends = [
            read_manifest(p.path).window_end
            for p in found
            if p.kind == "partial" and p.snapshot_time > newest
        ]
        at = max([newest, *ends])
    usable = [p for p in completes if p.snapshot_time <= at]
    if not usable:
        oldest = min(completes, key=lambda p: p.snapshot_time)
        raise RestoreError(
            f"{_fmt(at)} is before the oldest complete backup in {inbox} ({oldest.backup_id}, "
            f"snapshot {_fmt(oldest.snapshot_time)}): nothing older can be restored; the earliest "
            f"time is --at {_fmt(oldest.snapshot_time)}"
        )
    base = max(usable, key=lambda p: (p.snapshot_time, p.backup_id))
    complete = _chosen(base.path)
    snap = complete.manifest.snapshot_time
    partials = [_chosen(p.path) for p in found if p.kind == "partial" and p.snapshot_time > snap]
    window = max(
        [p.manifest.window_end - p.manifest.window_start for p in partials],
        default=timedelta(minutes=PARTIAL_MINUTES.read()),
    )
    partials = [p for p in partials if p.manifest.window_end <= at]
    partials.sort(key=lambda p: (p.manifest.snapshot_time, p.backup_id))

    covered, gaps = snap, []
    for p in sorted(partials, key=lambda p: (p.manifest.window_start, p.manifest.window_end)):
        if p.manifest.window_start > covered:
            gaps.append((covered, p.manifest.window_start))
        covered = max(covered, p.manifest.window_end)
    if at - covered >= window:
        gaps.append((covered, at))
    for start, end in gaps:
        text = (
            f"no partial backup in {inbox / 'partial'} covers {_fmt(start)} .. {_fmt(end)}: rows written "
            "then are not in the restore; publish the missing partial(s) again from the sender (their "
            f"partitions), or restore to --at {_fmt(start)}"
        )
        if not allow_gaps:
            raise RestoreError(text + " (or accept the hole with --allow-gaps)")
        warnings.append(text)
    if covered < at and not gaps:
        warnings.append(
            f"the state restored is the sender's as of {_fmt(covered)}, the newest backup time at or "
            f"before {_fmt(at)}: a partial of the window holding T would bring rows written after T"
        )
    return RestorePlan(at, complete, partials, min(covered, at), warnings)


# --------------------------------------------------------------------------- the target


def _dbname(dsn: str) -> str:
    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise ConfigError(f"the target DSN ({describe_dsn(dsn)}) names no database: add dbname=NEW_DATABASE")
    return str(name)


def _user_relations(conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname <> 'information_schema' "
            "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
        ).fetchall()
    ]


def check_target(target_dsn: str, create_from: str | None) -> None:
    """The target must be new: absent (with ``create_from``) or without any table."""
    name = _dbname(target_dsn)
    if create_from:
        with connect(create_from, autocommit=True, application_name="arb_pitr") as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                raise RestoreError(
                    f"database {name} exists already: --create-from creates a new one; choose a new "
                    f"dbname in --dsn, or leave out --create-from to restore into {name} if it is empty"
                )
        return
    try:
        conn = connect(target_dsn, autocommit=True, application_name="arb_pitr")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc} If the database does not exist yet, create it (createdb {name}) or pass "
            "--create-from MAINTENANCE_DSN to have it created"
        ) from exc
    with conn:
        found = _user_relations(conn)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise RestoreError(
            f"target database {name} is not empty ({len(found)} relation(s): {shown}); a restore "
            "writes only into a new, empty database and nothing was written: create one "
            f"(createdb NEW_NAME) or pass --create-from MAINTENANCE_DSN with a new dbname"
        )


def _create(create_from: str, name: str) -> None:
    with connect(create_from, autocommit=True, application_name="arb_pitr") as admin:
        try:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
        except psycopg.Error as exc:
            raise RestoreError(
                f"can't create database {name} through {describe_dsn(create_from)}: "
                f"{str(exc).strip()}; the role needs CREATEDB (ALTER ROLE ... CREATEDB)"
            ) from exc


def _drop(create_from: str, name: str) -> None:
    with connect(create_from, autocommit=True, application_name="arb_pitr") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- restore


@dataclass
class RestoreResult:
    plan: RestorePlan
    database: str
    loads: list[LoadResult] = field(default_factory=list)
    media: list[InstallResult] = field(default_factory=list)
    parity: list[RestoredTable] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.parity)

    def format(self) -> str:
        lines = [
            self.plan.describe(),
            f"restored into {self.database}: {len(self.loads)} backup(s), "
            f"{sum(r.rows_written for r in self.loads)} rows written",
        ]
        if self.media:
            lines.append(f"media: {sum(len(m.installed) for m in self.media)} file(s) installed")
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [t.format() for t in self.parity]
        drift = [t.table for t in self.parity if not t.ok]
        lines.append(
            f"parity DRIFT: {len(drift)} of {len(self.parity)} tables differ from the backups"
            if drift
            else f"parity ok: {len(self.parity)} tables equal to the backups"
        )
        return "\n".join(lines)


def verify_plan(plan: RestorePlan, progress: Progress) -> None:
    """Every backup of the plan intact, before anything is written."""
    for chosen in progress.track(plan.backups, "verify", describe=lambda c: c.backup_id):
        try:
            verify_files(chosen.path)
        except VerifyError as exc:
            what = str(exc).split(". The backup was altered")[0]
            raise RestoreError(
                f"backup {chosen.backup_id} on the restore path failed verification: {what}. "
                "Nothing was restored; get an intact copy (re-run its partition on the sender), or "
                f"restore to a time before it (--at {_fmt(chosen.manifest.window_start)})"
            ) from exc


def restore(
    inbox: Path,
    at: datetime | None,
    target_dsn: str,
    *,
    create_from: str | None = None,
    media_dir: Path | None = None,
    allow_gaps: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """Plan, verify, create (optionally), migrate, load, then check parity against the backups."""
    progress = progress or silent()
    plan = plan_restore(inbox, at, allow_gaps=allow_gaps)
    check_target(target_dsn, create_from)
    if media_dir is not None:
        Path(media_dir).mkdir(parents=True, exist_ok=True)
    verify_plan(plan, progress)
    name = _dbname(target_dsn)
    result = RestoreResult(plan, name)
    if create_from:
        _create(create_from, name)
    try:
        apply_migrations(target_dsn, "receiver")
        with connect(target_dsn, application_name="arb_pitr") as conn:
            for chosen in progress.track(plan.backups, "load", describe=lambda c: c.backup_id):
                schema_plan = check_schema(chosen.manifest, conn)
                conn.rollback()
                result.warnings += schema_plan.warnings()
                bundle = chosen.manifest.file("media")
                if media_dir is not None and bundle is not None:
                    media = install_media(chosen.path / bundle.name, chosen.manifest.media, Path(media_dir))
                    result.media.append(media)
                    result.warnings += [
                        f"media file {c.name} differs from the one already in {media_dir}; kept "
                        f"the existing file, the backup's is at {c.kept_as}"
                        for c in media.conflicts
                    ]
                load = load_backup(conn, chosen.path, chosen.manifest, chosen.manifest_sha256, dsn=target_dsn)
                if load.outcome != "loaded":
                    raise RestoreError(
                        f"backup {chosen.backup_id} was {load.outcome}, not loaded, into the new "
                        f"database {name}: was it not new? Restore into an empty database"
                    )
                result.loads.append(load)
    except BaseException as exc:
        if create_from:  # ours and half-built: nothing in it is worth keeping
            _drop(create_from, name)
        if isinstance(exc, ArbError):
            where = (
                f"the new database {name} was dropped"
                if create_from
                else f"database {name} holds part of the restore: drop and create it again before a new try"
            )
            raise RestoreError(f"{exc} ({where})") from exc
        raise
    result.parity = check_restored(target_dsn, plan, progress)
    return result
