"""The receiver's loaded-table assets, on the sender's partitions.

A run loads the backups the inbox sensor chose (``backup_ids`` in the run config: one,
or a catch-up's consecutive partitions as one ranged run) or, from `dagster asset
materialize` or a UI backfill, every unloaded backup of its partitions in the inbox;
misnamed or unparsable backups there are set aside as the sensor's runs do
(receive.inbox.set_aside), and the run fails after loading the good ones. Each backup is
its own transaction and its partition's own materialization, so a run of 288 partials
shows as 288 loaded windows. The step holds the ``receiver_db`` pool: one database load
at a time, across sensor runs and the CLI.
"""

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.freshness import policy_for
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.load.captured_checks import check_captured_partial
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
            skippable=True,  # materialized per loaded backup (_materializations), not by an output
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
            skippable=True,
            description="media files of the backup, installed in the receiver's media folder",
        )
    )
    return specs


STOPPED_TAG = "arb/stopped_at"  # on a run of several backups: the one that stopped it


class LoadConfig(dg.Config):
    # The inbox sensor's choice, in snapshot order; empty: every unloaded backup of the
    # run's partitions found in the inbox (`dagster asset materialize`, a UI backfill).
    backup_ids: list[str] = []


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
    settings: ReceiverSettings,
    db: ReceiverDatabase,
    kind: str,
    partition_keys: Sequence[str],
    backup_ids: list[str],
) -> tuple[list[Pending], list[str]]:
    """The backups this run loads, in snapshot order, and why any it should have can't be
    (set aside as the sensor does, ``set_aside``, or gone): the ones requested, or every
    unloaded one of the run's partitions. A folder that names no partition is set aside by
    any run, as by the sensor's tick."""
    published, unreadable = find_published(Path(settings.inbox_dir))
    keys = set(partition_keys)
    mine = [p for p in published if p.kind == kind and p.partition_key in keys]
    quarantine_dir = Path(settings.quarantine_dir)
    if backup_ids:
        wanted = set(backup_ids)
        problems = []
        for bad in unreadable:
            if bad.backup_id in wanted and bad.kind == kind:
                message = set_aside(bad, quarantine_dir)
                if bad.at_fault:
                    key = partition_key_from_name(kind, bad.backup_id) or "of its window"
                    message += f". Re-run the sender's partition {key} to publish it again."
                problems.append(message)
        chosen = [p for p in mine if p.backup_id in wanted]
        found = {p.backup_id for p in chosen} | {b.backup_id for b in unreadable}
        gone = [b for b in backup_ids if b not in found]
        done = loaded_ids(db.checked_dsn()) if gone else {}
        # Loaded, then removed by retention: a run launched again (a crash, a re-run) has nothing to do.
        problems += [
            f"backup {b} is not in the inbox {settings.inbox_dir}/{kind} and was never loaded "
            "(quarantined: see the quarantine folder)"
            for b in gone
            if b not in done
        ]
        return chosen, problems
    bad_here = [
        b
        for b in unreadable
        if b.kind == kind and partition_key_from_name(kind, b.backup_id) in {*keys, None}
    ]
    set_aside_messages = [set_aside(b, quarantine_dir) for b in bad_here]
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
        if kind == "partial" and received.manifest.source == "capture":
            return _captured_checks(
                check_captured_partial(dsn, path, received.manifest, received.load), tables
            )
        if kind == "partial":
            return check_partial(dsn, path, received.manifest, received.load, shown=tables)
        return check_complete(dsn, path, received.manifest, received.load)
    except Exception as exc:  # the load committed; a check that can't run fails, it doesn't undo it
        context.log.error(f"checks of {received.load.backup_id} could not run: {exc}")
        return {t: TableCheck(t, False, f"the check could not run: {exc}") for t in tables}


def _captured_checks(checks: dict[str, TableCheck], tables: Sequence[str]) -> dict[str, TableCheck]:
    """A captured partial's checks on the tables with an asset; a table it changed without one
    (telemetry, tokens) that failed fails each of them, named, rather than go unseen."""
    unseen = [c for t, c in checks.items() if t not in tables and not c.passed]
    if not unseen:
        return checks
    text = "; captured table(s) without an asset not applied: " + "; ".join(c.description for c in unseen)
    return {t: TableCheck(t, False, (checks[t].description if t in checks else t) + text) for t in tables}


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


def _materializations(kind: str, tables: Sequence[str], received: Received):
    """One backup's load as its partition's materialization of every table, and last (the
    load committed) of its media: what the UI shows and the postprocess sensor watches."""
    m, load = received.manifest, received.load
    common = {
        "backups": dg.MetadataValue.json([{"backup_id": load.backup_id, "outcome": load.outcome}]),
        # numbers the UI plots: lag from the newest source timestamp to this load
        "lag_seconds": _lag_seconds(received),
        "window_lag_seconds": _window_lag_seconds(received),
        "snapshot_time": dg.MetadataValue.timestamp(m.snapshot_time),
    }
    sizes = {f.table: f.bytes for f in m.table_files()}
    by_table = {t.table: t for t in load.tables}
    for table in tables:
        t = by_table.get(table)
        yield dg.AssetMaterialization(
            asset_key=loaded_key(kind, table),
            partition=m.partition_key,
            metadata={
                **common,
                "rows_in_backup": t.rows_in_backup if t else 0,
                "rows_written": t.rows_written if t else 0,
                "rows_deleted": t.rows_deleted if t else 0,
                "bytes": sizes.get(table, 0),
            },
        )
    media, bundle = received.media, m.file("media")
    yield dg.AssetMaterialization(
        asset_key=dg.AssetKey(["receiver", kind, "media"]),
        partition=m.partition_key,
        metadata={
            **common,
            "installed": len(media.installed) if media else 0,
            "identical": len(media.identical) if media else 0,
            "conflicts": len(media.conflicts) if media else 0,
            "bytes": bundle.bytes if bundle else 0,
        },
    )


def _load(
    context,
    kind: str,
    tables: Sequence[str],
    config: LoadConfig,
    db: ReceiverDatabase,
    settings: ReceiverSettings,
):
    """Load the run's backups one by one, each in its own transaction, in snapshot order.

    A backup at fault is quarantined and the others still load; one that can't load for
    another reason (the disk floor, the receiver's schema, a held complete, the database)
    stops the run there: it and the ones after it wait in the inbox, and the run's
    ``STOPPED_TAG`` names it, so the sensor retries it and not the others. The run fails
    if any backup didn't load; each loaded one is its partition's materialization."""
    keys = context.partition_keys
    backups, problems = _backups_for(settings, db, kind, keys, config.backup_ids)
    failures: list[Exception] = [dg.Failure(message) for message in problems]
    for message in problems:
        context.log.error(message)
    if not backups and not problems:
        span = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        context.log.info(f"no unloaded {kind} backup of partition {span} in the inbox")
    checks: list[tuple[str, dict]] = []  # before retention, which may remove the backup's files
    for pending in backups:
        try:
            received = receive(
                pending.path,
                dsn=db.checked_dsn(),
                media_dir=Path(settings.media_dir),
                quarantine_dir=Path(settings.quarantine_dir),
                min_free_bytes=int(settings.min_free_mb * 1024 * 1024),
                deletion_limits=DeletionLimits(settings.max_delete_share, settings.delete_guard_min_rows),
            )
        except Exception as exc:
            if not pending.path.exists():  # quarantined, the error says where: the others still load
                context.log.error(str(exc))
                failures.append(exc)
                continue
            if len(backups) > 1:  # name it: the run's tags name no backup
                context.instance.add_run_tags(context.run_id, {STOPPED_TAG: pending.backup_id})
                behind = len(backups) - backups.index(pending) - 1
                stopped = dg.Failure(
                    f"backup {pending.backup_id} could not load, so it and the {behind} backup(s) after it "
                    f"wait in the inbox: {exc}"
                )
                stopped.__cause__ = exc
                context.log.error(stopped.description)
                exc = stopped
            failures.append(exc)
            break
        for warning in received.warnings:
            context.log.warning(warning)
        context.log.info(
            f"{received.load.outcome} {pending.backup_id}: {received.load.rows_written} rows written, "
            f"{received.load.rows_deleted} deleted, of {received.load.rows_in_backup}"
        )
        checks.append(
            (pending.backup_id, _run_checks(context, kind, tables, received, pending.path, db.checked_dsn()))
        )
        for event in _materializations(kind, tables, received):
            context.log_event(event)
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
    yield from _check_results(kind, tables, checks)
    if len(failures) == 1:  # the backup's own error, as a run of one backup raises it
        raise failures[0]
    if failures:  # the good backups are in; the run still fails, so the CLI exits non-zero
        raise dg.Failure(
            f"{len(failures)} {kind} backup(s) of this run could not be loaded: "
            + "; ".join(str(f.description if isinstance(f, dg.Failure) else f) for f in failures)
        ) from failures[0]


@dg.multi_asset(
    name="load_partial",
    specs=_specs("partial", CATALOG.partial_tables, PARTIAL),
    partitions_def=PARTIAL,
    check_specs=_check_specs("partial", CATALOG.partial_tables),
    pool="receiver_db",
    can_subset=False,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a UI backfill or CLI range: one run
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
    backfill_policy=dg.BackfillPolicy.single_run(),  # a UI backfill or CLI range: one run
)
def load_complete(
    context: dg.AssetExecutionContext,
    config: LoadConfig,
    receiver_db: ReceiverDatabase,
    receiver_settings: ReceiverSettings,
):
    """Verify a complete backup and apply it: upserts, then deletions, in one transaction."""
    yield from _load(context, "complete", CATALOG.complete_tables, config, receiver_db, receiver_settings)
