"""The sender's backup assets: table dumps, media bundles and the published package.

One multi-asset per kind, so that all of a backup's tables come from one database
snapshot: each table and the media bundle are assets of their own (status, row counts
and lineage per table in the UI), and the ``backup`` asset is the package itself,
which the BackupPublisher IO manager publishes with its manifest last.
"""

import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from arb_pipeline.capture.chain import CAPTURE
from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.freshness import policy_for
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.extract.build import BackupPart, BuiltBackup, build_complete, build_partial
from arb_pipeline.extract.staging import create_run_folder, sweep_staging
from arb_pipeline.extract.tables import Window
from arb_pipeline.sender.capture_mode import capture_build, capture_metadata
from arb_pipeline.sender.resources import SenderDatabase, SenderSettings

# Read when the code location loads; runs use this same catalog for what they extract.
CATALOG = current_catalog()


def table_key(kind: str, table: str) -> dg.AssetKey:
    return dg.AssetKey(["sender", kind, CATALOG.short_name(table)])


def _specs(kind: str, tables: Sequence[str], partitions_def) -> list[dg.AssetSpec]:
    group = f"sender_{kind}"
    fresh = policy_for(kind)
    table_specs = [
        dg.AssetSpec(
            table_key(kind, t),
            group_name=group,
            partitions_def=partitions_def,
            description=f"{t} rows of the {kind} backup, published on the receiver",
            kinds={"postgres"},
            freshness_policy=fresh,
        ).with_io_manager_key("backup_publisher")
        for t in tables
    ]
    media = dg.AssetSpec(
        ["sender", kind, "media"],
        group_name=group,
        partitions_def=partitions_def,
        description="media files referenced by the backup's rows",
        kinds={"file"},
        freshness_policy=fresh,
    ).with_io_manager_key("backup_publisher")
    package = dg.AssetSpec(
        ["sender", kind, "backup"],
        group_name=group,
        partitions_def=partitions_def,
        freshness_policy=fresh,
        deps=[s.key for s in table_specs] + [media.key],
        description=f"the {kind} backup package, committed on the receiver by its manifest",
    ).with_io_manager_key("backup_publisher")
    return table_specs + [media, package]


def _results(context: dg.AssetExecutionContext, kind: str, built: BuiltBackup, shown_tables: set[str]):
    """Outputs in publishing order: each table's dump, the media bundle, then the package
    (remaining files and the manifest). The IO manager publishes each as it is yielded."""
    m = built.manifest
    upserts = {f.table: f for f in m.table_files()}
    deletes = {f.table: f for f in m.delete_files()}
    # a captured partial has files only for tables that changed: the others show 0 rows
    for table in [t for t in upserts if t in shown_tables] + sorted(shown_tables - set(upserts)):
        rows = upserts.get(table)
        files = [f for f in (rows, deletes.get(table)) if f is not None]
        metadata = {"rows": rows.rows if rows else 0, "bytes": sum(f.bytes for f in files)}
        if rows:
            metadata["sha256"] = rows.sha256
        if table in deletes:
            metadata["deleted_keys"] = deletes[table].rows
        yield dg.Output(
            BackupPart(built, tuple(f.name for f in files)),
            output_name=_output_name(table_key(kind, table).path),
            metadata={**metadata, "backup_id": m.backup_id},
        )
    media_file = m.file("media")
    yield dg.Output(
        BackupPart(built, (media_file.name,) if media_file else ()),
        output_name=_output_name(["sender", kind, "media"]),
        metadata={
            "files": len(m.media),
            "bytes": media_file.bytes if media_file else 0,
            "missing": dg.MetadataValue.json([{"name": x.name, "reason": x.reason} for x in m.media_missing]),
        },
    )
    if m.media_missing:
        context.log.warning(
            f"{len(m.media_missing)} referenced media file(s) missing or unsafe: "
            + ", ".join(x.name for x in m.media_missing[:10])
        )
    yield dg.Output(
        built,
        output_name=_output_name(["sender", kind, "backup"]),
        metadata={
            "backup_id": m.backup_id,
            "snapshot_time": m.snapshot_time.isoformat(),
            "rows": sum(f.rows or 0 for f in m.table_files()),
            "bytes": sum(f.bytes for f in m.files),
            "media_files": len(m.media),
            "media_missing": len(m.media_missing),
            **capture_metadata(m),
        },
    )


def _output_name(path: list[str]) -> str:
    return "__".join(path)


def _run_backup(
    context: dg.AssetExecutionContext,
    kind: str,
    build,
    settings: SenderSettings,
    after_publish=None,
    **kwargs,
):
    """Build one backup in a per-run staging folder, yield its outputs (the IO manager
    publishes each as it is yielded, the package's manifest last), then ``after_publish``
    (a captured partial's slot advance), and empty the folder after every run, failed ones too."""
    tw = context.partition_time_window
    staging = Path(settings.staging_dir)
    sweep = sweep_staging(staging)
    for path in sweep.removed:
        context.log.info(f"removed {path}, left in ARB_STAGING_DIR by a run that died")
    for path in sweep.foreign:
        context.log.warning(
            f"{path} in ARB_STAGING_DIR is not a folder of this pipeline (no marker): left alone, "
            "reported once; move it out of the staging folder or point ARB_STAGING_DIR elsewhere"
        )
    run_dir = create_run_folder(staging, context.run.run_id)
    try:
        built = build(
            partition_key=context.partition_key,
            window=Window(tw.start, tw.end),
            unique=context.run.run_id.replace("-", ""),
            media_dir=Path(settings.media_dir),
            sender_id=settings.resolved_sender_id(),
            include_personal=settings.include_personal_columns,
            staging_root=run_dir,
            catalog=CATALOG,
            **kwargs,
        )
        yield from _results(context, kind, built, set(CATALOG.tables_of(kind)))
        if after_publish is not None:  # the generator resumes only once the manifest is published
            after_publish(built)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@dg.multi_asset(
    name="partial_backup",
    specs=_specs("partial", CATALOG.partial_tables, PARTIAL),
    partitions_def=PARTIAL,
    pool="sender_partial",  # one window at a time: a captured window reads from where the last left the slot
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    can_subset=False,
)
def partial_backup(
    context: dg.AssetExecutionContext, sender_db: SenderDatabase, sender_settings: SenderSettings
):
    """Rows whose cursor falls in the partition's window (plus the overlap for late
    commits and clock skew) and their FK parents, one JSON Lines file per table; with
    ARB_PARTIAL_SOURCE=capture, every change committed in the window, from the slot."""
    if sender_settings.partial_source == CAPTURE:
        build, kwargs = capture_build(context, sender_db, sender_settings)
        yield from _run_backup(context, "partial", build, sender_settings, **kwargs)
        return
    yield from _run_backup(
        context,
        "partial",
        build_partial,
        sender_settings,
        dsn=sender_db.checked_dsn(),
        overlap=sender_settings.overlap(),
    )


@dg.multi_asset(
    name="complete_backup",
    specs=_specs("complete", CATALOG.complete_tables, COMPLETE),
    partitions_def=COMPLETE,
    pool="sender_complete",
    can_subset=False,
)
def complete_backup(
    context: dg.AssetExecutionContext, sender_db: SenderDatabase, sender_settings: SenderSettings
):
    """Every catalog table from one snapshot (COPY format, restorable with psql), all media."""
    yield from _run_backup(
        context,
        "complete",
        build_complete,
        sender_settings,
        dsn=sender_db.checked_dsn(),
        pg_dump=sender_settings.pg_dump,
        zstd_level=sender_settings.zstd_level,
        fingerprints=sender_settings.complete_fingerprints,
        pin_to_slot=sender_settings.partial_source == CAPTURE,  # captured partials order against it
    )
