"""Build and publish one backup: extraction + media + manifest, then an atomic publish.

The sender's Dagster assets call these; so do the benchmarks and the tests. No Dagster.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from arb_pipeline import __version__
from arb_pipeline.capture.pgoutput import format_lsn
from arb_pipeline.capture.pin import pinned_snapshot
from arb_pipeline.catalog import Catalog, current_catalog, introspect, shipped_columns
from arb_pipeline.errors import ArbError, ConfigError
from arb_pipeline.extract.media import bundle_all_media, bundle_media
from arb_pipeline.extract.tables import DEFAULT_OVERLAP, Extracted, Window, extract_complete, extract_partial
from arb_pipeline.package.backup_id import build_backup_id
from arb_pipeline.package.manifest import FileEntry, Manifest
from arb_pipeline.package.writer import StagedBackup
from arb_pipeline.pg.connect import client_program_args, connect
from arb_pipeline.pg.quote import quote_ident

if TYPE_CHECKING:  # importing transport loads paramiko (0.15 s): the dump itself needs none of it
    from arb_pipeline.transport.base import Transport

log = logging.getLogger(__name__)


@dataclass
class BuiltBackup:
    staged: StagedBackup
    manifest: Manifest
    published: set[str] = field(default_factory=set)

    @property
    def remote_dir(self) -> str:
        return f"{self.manifest.kind}/{self.manifest.backup_id}"


@dataclass(frozen=True)
class BackupPart:
    """Some files of a staged backup (one table's dump, the media bundle), published on
    their own before the manifest commits the whole backup."""

    built: BuiltBackup
    names: tuple[str, ...]


def default_sender_id() -> str:
    return socket.gethostname()


def _manifest(
    kind,
    bid,
    partition_key,
    window,
    extract_from,
    ex: Extracted,
    staged,
    media,
    sender_id,
    extra=None,
    capture_lsn=None,
):
    return Manifest(
        backup_id=bid,
        kind=kind,
        partition_key=partition_key,
        window_start=window.start,
        window_end=window.end,
        extract_from=extract_from,
        snapshot_time=ex.snapshot_time,
        sender_id=sender_id,
        created_by=f"arb_pipeline {__version__}",
        files=tuple(staged.entries),
        tables_order=tuple(ex.tables_order),
        media=tuple(media.files),
        media_missing=tuple(media.missing),
        extra=extra or {},
        capture_lsn=capture_lsn,
    )


def build_partial(
    dsn: str,
    staging_root: Path,
    *,
    partition_key: str,
    window: Window,
    unique: str,
    media_dir: Path,
    sender_id: str,
    overlap: timedelta = DEFAULT_OVERLAP,
    catalog: Catalog | None = None,
    include_personal: bool = False,
) -> BuiltBackup:
    """Extract the window's rows and the media they reference into a staging folder."""
    bid = build_backup_id("partial", partition_key, unique)
    staged = StagedBackup(Path(staging_root) / bid)
    with connect(dsn) as conn:
        ex = extract_partial(
            conn, staged, window, overlap=overlap, catalog=catalog, include_personal=include_personal
        )
    media = bundle_media(Path(media_dir), ex.media_names, staged)
    manifest = _manifest(
        "partial",
        bid,
        partition_key,
        window,
        window.start - overlap,
        ex,
        staged,
        media,
        sender_id,
        {"overlap_seconds": overlap.total_seconds()},
    )
    staged.write_manifest(manifest)
    return BuiltBackup(staged, manifest)


def build_complete(
    dsn: str,
    staging_root: Path,
    *,
    partition_key: str,
    window: Window,
    unique: str,
    media_dir: Path,
    sender_id: str,
    pg_dump: str = "pg_dump",
    catalog: Catalog | None = None,
    include_personal: bool = False,
    zstd_level: int = 1,
    fingerprints: bool = False,
    pin_to_slot: bool = False,
) -> BuiltBackup:
    """Every catalog table from one snapshot, in COPY text format, plus schema.sql and
    restore.sql so that psql alone can restore it (disaster recovery), plus all media.

    ``pin_to_slot`` (capture mode): the snapshot is a temporary slot's (capture/pin.py) and
    the manifest's ``capture_lsn`` is its exact position, which captured partials are
    ordered against on the receiver."""
    catalog = catalog or current_catalog()
    bid = build_backup_id("complete", partition_key, unique)
    staged = StagedBackup(Path(staging_root) / bid)

    def dump_schema(snapshot_id: str) -> None:
        with staged.binary_file("schema.sql") as out:
            out.write(_pg_dump_schema(dsn, pg_dump, snapshot_id, list(catalog.table_names)))
        size, digest = staged.last_file
        staged.add_entry(FileEntry(name="schema.sql", kind="schema", bytes=size, sha256=digest))

    psql = str(Path(pg_dump).with_name("psql")) if Path(pg_dump).with_name("psql").exists() else "psql"
    with ExitStack() as stack:
        pin = stack.enter_context(pinned_snapshot(dsn)) if pin_to_slot else None
        conn = stack.enter_context(connect(dsn))
        ex = extract_complete(
            conn,
            staged,
            catalog=catalog,
            include_personal=include_personal,
            level=zstd_level,
            on_snapshot=dump_schema,
            psql=psql,
            dsn=dsn,
            fingerprints=fingerprints,
            pinned_snapshot_id=pin.snapshot_id if pin else None,
        )
        restore = _restore_script(conn, ex, catalog, include_personal)
    with staged.binary_file("restore.sql") as out:
        out.write(restore.encode())
    size, digest = staged.last_file
    staged.add_entry(FileEntry(name="restore.sql", kind="restore", bytes=size, sha256=digest))
    media = bundle_all_media(Path(media_dir), staged)
    capture_lsn = format_lsn(pin.lsn) if pin else None
    manifest = _manifest(
        "complete", bid, partition_key, window, None, ex, staged, media, sender_id, capture_lsn=capture_lsn
    )
    staged.write_manifest(manifest)
    return BuiltBackup(staged, manifest)


def _pg_dump_schema(dsn: str, pg_dump: str, snapshot_id: str, tables: list[str]) -> bytes:
    conninfo, env = client_program_args(dsn)
    args = [
        pg_dump,
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        f"--snapshot={snapshot_id}",
        "--dbname",
        conninfo,
    ]
    for table in tables:
        args += ["--table", f"public.{quote_ident(table)}"]
    try:
        done = subprocess.run(args, capture_output=True, env=env, timeout=600, check=False)
    except FileNotFoundError:
        raise ConfigError(
            f"pg_dump not found at {pg_dump!r}: install postgresql-client or set ARB_PG_DUMP"
        ) from None
    if done.returncode != 0:
        raise ArbError(
            f"pg_dump --schema-only failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return done.stdout


def _restore_script(conn, ex: Extracted, catalog, include_personal) -> str:
    """psql script restoring this backup into an empty database (run from the backup folder)."""
    specs = {s.name: s for s in catalog.specs}
    infos = introspect(conn, ex.tables_order)
    lines = [
        "-- Restore this complete backup into an EMPTY database, from this folder:",
        "--   psql -v ON_ERROR_STOP=1 --single-transaction -d NEWDB -f restore.sql",
        "-- Needs psql and zstd. Foreign keys are deferred, so the load order does not matter.",
        r"\ir schema.sql",
        "SET search_path = public;",
    ]
    for table in ex.tables_order:
        info, spec = infos[table], specs[table]
        shipped = shipped_columns(spec, info, include_personal)
        for col in info.columns:  # excluded personal columns stay empty
            if col not in shipped and col.not_null:
                lines.append(
                    f"ALTER TABLE {quote_ident(table)} ALTER COLUMN {quote_ident(col.name)} DROP NOT NULL;"
                )
        cols = ", ".join(quote_ident(c.name) for c in shipped)
        lines.append(f"\\copy {quote_ident(table)} ({cols}) FROM PROGRAM 'zstd -dcq tables/{table}.copy.zst'")
        for pk in info.primary_key:  # serial ids: the sequence continues after the restored rows
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (quote_ident(table), pk)).fetchone()[
                0
            ]
            if seq:
                lines.append(
                    f"SELECT setval('{seq}', max({quote_ident(pk)})) FROM {quote_ident(table)} "
                    f"HAVING max({quote_ident(pk)}) IS NOT NULL;"
                )
    return "\n".join(lines) + "\n"


def publish(transport: Transport, built: BuiltBackup, names: tuple[str, ...] | None = None) -> list[str]:
    """Publish files of the backup, each atomically; with no ``names``, every file not yet
    published and then the manifest. The receiver acts only on a backup whose manifest
    exists, so an interrupted publish is never loaded."""
    todo = built.staged.published_order() if names is None else list(names)
    done = []
    for name in todo:
        if name in built.published:
            continue
        transport.publish(built.staged.path(name), f"{built.remote_dir}/{name}")
        built.published.add(name)
        done.append(name)
    return done
