"""The receiver's loaded-table assets, on the sender's partitions.

A run loads one backup (``backup_id`` in the run config, set by the inbox sensor) or,
from `dagster asset materialize`, every unloaded backup of its partition in the inbox;
misnamed or unparsable backups of the partition are set aside as the sensor's runs do
(receive.inbox.set_aside), and the run fails after loading the good ones. The step holds
the ``receiver_db`` pool: one database load at a time, across sensor runs and the CLI.
"""

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.freshness import policy_for
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.load.checks import TableCheck, check_complete, check_partial
from arb_pipeline.load.hold import DeletionLimits
from arb_pipeline.package.backup_id import parse_backup_id
from arb_pipeline.receive.inbox import (
    Pending,
    Received,
    apply_retention_after_load,
    find_published,
    loaded_ids,
    receive,
    set_aside,
)
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings

# Read when the code location loads: one asset per catalog table (ARB_CATALOG).
CATALOG = current_catalog()


def loaded_key(kind: str, table: str) -> dg.AssetKey:
    return dg.AssetKey(["receiver", kind, CATALOG.short_name(table)])


def _specs(kind: str, tables: Sequence[str], partitions_def) -> list[dg.AssetSpec]:
    group = f"receiver_{kind}"
    fresh = policy_for(kind)
    specs = [
        dg.AssetSpec(
            loaded_key(kind, t),
            group_name=group,
            partitions_def=partitions_def,
            deps=[dg.AssetKey(["sender", kind, CATALOG.short_name(t)])],
            kinds={"postgres"},
            freshness_policy=fresh,
            description=f"{t} on the receiver, with the {kind} backups of each window applied",
        )
        for t in tables
    ]
    specs.append(
        dg.AssetSpec(
            ["receiver", kind, "media"],
            group_name=group,
            partitions_def=partitions_def,
            deps=[dg.AssetKey(["sender", kind, "media"])],
            kinds={"file"},
            freshness_policy=fresh,
            description="media files of the backup, installed in the receiver's media folder",
        )
    )
    return specs


class LoadConfig(dg.Config):
    backup_id: str = ""  # empty: every unloaded backup of the partition found in the inbox


def partition_key_from_name(kind: str, backup_id: str) -> str | None:
    """The partition a backup folder's name claims, if it is one of ours."""
    parsed = parse_backup_id(backup_id)
    if parsed is None or parsed.kind != kind:
        return None
    partitions = PARTIAL if kind == "partial" else COMPLETE
    try:
        partitions.time_window_for_partition_key(parsed.partition_key)
    except Exception:
        return None
    return parsed.partition_key


def _backups_for(
    settings: ReceiverSettings, db: ReceiverDatabase, kind: str, partition_key: str, backup_id: str
) -> tuple[list[Pending], list[str]]:
    """The backups this run loads, and what it set aside (``set_aside``, as the sensor does):
    the one requested, or every unloaded one of the partition. A folder that names no
    partition is set aside by any run, as by the sensor's tick."""
    published, unreadable = find_published(Path(settings.inbox_dir))
    mine = [p for p in published if p.kind == kind and p.partition_key == partition_key]
    if backup_id:
        for bad in unreadable:
            if bad.backup_id == backup_id and bad.kind == kind:
                message = set_aside(bad, Path(settings.quarantine_dir))
                if bad.at_fault:
                    message += f". Re-run the sender's partition {partition_key} to publish it again."
                raise dg.Failure(message)
        chosen = [p for p in mine if p.backup_id == backup_id]
        if not chosen:
            raise dg.Failure(
                f"backup {backup_id} is not in the inbox {settings.inbox_dir}/{kind} "
                "(already loaded and removed by retention, or quarantined: see the quarantine folder)"
            )
        return chosen, []
    bad_here = [
        b
        for b in unreadable
        if b.kind == kind and partition_key_from_name(kind, b.backup_id) in (partition_key, None)
    ]
    set_aside_messages = [set_aside(b, Path(settings.quarantine_dir)) for b in bad_here]
    done = loaded_ids(db.checked_dsn())
    return [p for p in mine if p.backup_id not in done], set_aside_messages


def _lag_seconds(received: Received) -> float:
    """Newest source timestamp (the backup's snapshot, on the sender's clock) to load time."""
    return (datetime.now(timezone.utc) - received.manifest.snapshot_time).total_seconds()


def _window_lag_seconds(received: Received) -> float:
    return (datetime.now(timezone.utc) - received.manifest.window_end).total_seconds()


CHECK_NAMES = {"partial": "rows_applied", "complete": "parity"}
CHECK_DESCRIPTIONS = {
    "partial": "every row of the partial's file (and of the FK parents it carried) is on the receiver at the "
    "backup's version or newer",
    "complete": "the table equals the sender's snapshot: row count and digest from the manifest, rows "
    "written by newer partials left out; on drift, the first differing keys",
}


def _check_specs(kind: str, tables: Sequence[str]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            CHECK_NAMES[kind], asset=loaded_key(kind, t), blocking=True, description=CHECK_DESCRIPTIONS[kind]
        )
        for t in tables
    ]


def _run_checks(context, kind: str, tables: Sequence[str], received: Received, path: Path, dsn: str) -> dict:
    try:
        if kind == "partial":
            return check_partial(dsn, path, received.manifest, received.load, shown=tables)
        return check_complete(dsn, path, received.manifest, received.load)
    except Exception as exc:  # the load committed; a check that can't run fails, it doesn't undo it
        context.log.error(f"checks of {received.load.backup_id} could not run: {exc}")
        return {t: TableCheck(t, False, f"the check could not run: {exc}") for t in tables}


def _check_results(kind: str, tables: Sequence[str], checks: list[tuple[str, dict]]):
    for table in tables:
        found = [(bid, c[table]) for bid, c in checks if table in c]
        key = loaded_key(kind, table)
        if not found:
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=CHECK_NAMES[kind],
                passed=True,
                description="no backup of this table was loaded in this run",
            )
            continue
        passed = all(c.passed for _, c in found)
        shown = [(bid, c) for bid, c in found if passed or not c.passed]
        description = "; ".join((f"{bid}: " if len(found) > 1 else "") + c.description for bid, c in shown)
        metadata = {k: v for k, v in found[-1][1].metadata.items() if v is not None}
        metadata["backups"] = dg.MetadataValue.json([bid for bid, _ in found])
        first = [k for _, c in shown for k in c.first_keys]
        if first:
            metadata["first_keys"] = dg.MetadataValue.json(first)
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=CHECK_NAMES[kind],
            passed=passed,
            description=description[:4000],
            metadata=metadata,
        )


def _load(
    context,
    kind: str,
    tables: Sequence[str],
    config: LoadConfig,
    db: ReceiverDatabase,
    settings: ReceiverSettings,
):
    backups, set_aside_messages = _backups_for(settings, db, kind, context.partition_key, config.backup_id)
    for message in set_aside_messages:
        context.log.error(message)
    if not backups:
        context.log.info(f"no unloaded {kind} backup of partition {context.partition_key} in the inbox")
    results: list[Received] = []
    checks: list[tuple[str, dict]] = []  # before retention, which may remove the backup's files
    for pending in backups:
        received = receive(
            pending.path,
            dsn=db.checked_dsn(),
            media_dir=Path(settings.media_dir),
            quarantine_dir=Path(settings.quarantine_dir),
            min_free_bytes=int(settings.min_free_mb * 1024 * 1024),
            deletion_limits=DeletionLimits(settings.max_delete_share, settings.delete_guard_min_rows),
        )
        for warning in received.warnings:
            context.log.warning(warning)
        context.log.info(
            f"{received.load.outcome} {pending.backup_id}: {received.load.rows_written} rows written, "
            f"{received.load.rows_deleted} deleted, of {received.load.rows_in_backup}"
        )
        results.append(received)
        checks.append(
            (pending.backup_id, _run_checks(context, kind, tables, received, pending.path, db.checked_dsn()))
        )
    try:
        deleted = apply_retention_after_load(
            Path(settings.inbox_dir),
            db.checked_dsn(),
            partial_days=settings.partial_retention_days,
            complete_days=settings.complete_retention_days,
        )
        if deleted:
            context.log.info(f"retention removed {len(deleted)} loaded backup(s)")
    except Exception as exc:  # retention must never fail a load that committed
        context.log.warning(f"retention skipped: {exc}")
    by_table: dict[str, dict] = {}
    for r in results:
        sizes = {f.table: f.bytes for f in r.manifest.table_files()}
        for t in r.load.tables:
            agg = by_table.setdefault(
                t.table, {"rows_in_backup": 0, "rows_written": 0, "rows_deleted": 0, "bytes": 0}
            )
            agg["rows_in_backup"] += t.rows_in_backup
            agg["rows_written"] += t.rows_written
            agg["rows_deleted"] += t.rows_deleted
            agg["bytes"] += sizes.get(t.table, 0)
    common = {
        "backups": dg.MetadataValue.json(
            [{"backup_id": r.load.backup_id, "outcome": r.load.outcome} for r in results]
        )
    }
    if results:  # numbers the UI plots: lag from the newest source timestamp to this load
        common["lag_seconds"] = dg.MetadataValue.float(min(_lag_seconds(r) for r in results))
        common["window_lag_seconds"] = dg.MetadataValue.float(min(_window_lag_seconds(r) for r in results))
        common["snapshot_time"] = dg.MetadataValue.timestamp(max(r.manifest.snapshot_time for r in results))
    for table in tables:
        yield dg.MaterializeResult(
            asset_key=loaded_key(kind, table),
            metadata={
                **common,
                **{
                    k: dg.MetadataValue.int(v)
                    for k, v in by_table.get(
                        table, {"rows_in_backup": 0, "rows_written": 0, "rows_deleted": 0, "bytes": 0}
                    ).items()
                },
            },
        )
    yield dg.MaterializeResult(
        asset_key=["receiver", kind, "media"],
        metadata={
            **common,
            "installed": sum(len(r.media.installed) for r in results if r.media),
            "identical": sum(len(r.media.identical) for r in results if r.media),
            "conflicts": sum(len(r.media.conflicts) for r in results if r.media),
            "bytes": dg.MetadataValue.int(
                sum(r.manifest.file("media").bytes for r in results if r.manifest.file("media"))
            ),
        },
    )
    yield from _check_results(kind, tables, checks)
    if set_aside_messages:  # the good backups are in; the run still fails, so the CLI exits non-zero
        raise dg.Failure(
            f"{len(set_aside_messages)} {kind} backup(s) of partition {context.partition_key} could not be "
            "loaded: " + "; ".join(set_aside_messages)
        )


@dg.multi_asset(
    name="load_partial",
    specs=_specs("partial", CATALOG.partial_tables, PARTIAL),
    partitions_def=PARTIAL,
    check_specs=_check_specs("partial", CATALOG.partial_tables),
    pool="receiver_db",
    can_subset=False,
)
def load_partial(
    context: dg.AssetExecutionContext,
    config: LoadConfig,
    receiver_db: ReceiverDatabase,
    receiver_settings: ReceiverSettings,
):
    """Verify a partial backup and apply it in one transaction; quarantine it if it is bad."""
    yield from _load(context, "partial", CATALOG.partial_tables, config, receiver_db, receiver_settings)


@dg.multi_asset(
    name="load_complete",
    specs=_specs("complete", CATALOG.complete_tables, COMPLETE),
    partitions_def=COMPLETE,
    check_specs=_check_specs("complete", CATALOG.complete_tables),
    pool="receiver_db",
    can_subset=False,
)
def load_complete(
    context: dg.AssetExecutionContext,
    config: LoadConfig,
    receiver_db: ReceiverDatabase,
    receiver_settings: ReceiverSettings,
):
    """Verify a complete backup and apply it: upserts, then deletions, in one transaction."""
    yield from _load(context, "complete", CATALOG.complete_tables, config, receiver_db, receiver_settings)
