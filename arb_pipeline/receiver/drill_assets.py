"""The receiver's restore drill, as a scheduled asset: the newest complete backup in the
inbox is restored with psql into a scratch database, checked against its manifest and
dropped (arb_pipeline.restore.drill). Restore time and sizes are numeric metadata the
UI plots; a failed drill fails its run, which emails the admins.
"""

from pathlib import Path

import dagster as dg

from arb_pipeline import settings
from arb_pipeline.receiver.resources import ReceiverSettings
from arb_pipeline.restore.drill import latest_complete, run_drill
from arb_pipeline.settings.setting import daily_cron

DRILL_KEY = dg.AssetKey(["receiver", "ops", "restore_drill"])


class RestoreDrillSettings(dg.ConfigurableResource):
    """ARB_DRILL_DSN: a maintenance connection (dbname=postgres) of a role with CREATEDB,
    not a superuser (the drill runs the backup's restore.sql). ARB_PSQL: psql's path."""

    maintenance_dsn: str = ""
    psql: str = settings.PSQL.default
    allow_superuser: bool = False
    timeout_seconds: int = 6 * 3600


@dg.asset(
    key=DRILL_KEY,
    group_name="receiver_ops",
    kinds={"postgres"},
    description="Restores the newest complete backup with psql into a scratch database, checks every table's "
    "rows and digest against the manifest, drops it; records the restore time and sizes",
)
def restore_drill(
    context: dg.AssetExecutionContext,
    receiver_settings: ReceiverSettings,
    restore_drill_settings: RestoreDrillSettings,
) -> dg.MaterializeResult:
    pending = latest_complete(Path(receiver_settings.inbox_dir))
    if pending is None:
        raise dg.Failure(
            f"no complete backup in the inbox {receiver_settings.inbox_dir}/complete: the restore drill "
            "has nothing to restore. Is the sender's complete_backup_schedule running?"
        )
    context.log.info(f"restoring {pending.backup_id} ({pending.path}) into a scratch database")
    s = restore_drill_settings
    result = run_drill(
        pending.path,
        s.maintenance_dsn,
        psql=s.psql,
        timeout=s.timeout_seconds,
        allow_superuser=s.allow_superuser,
    )
    context.log.info(
        f"{result.backup_id}: restored in {result.restore_seconds:.1f} s, {result.rows} rows in "
        f"{result.tables} tables, {result.fingerprints_checked} digests equal to the manifest's"
    )
    return dg.MaterializeResult(
        metadata={
            "backup_id": result.backup_id,
            "restore_seconds": dg.MetadataValue.float(round(result.restore_seconds, 3)),
            "smoke_seconds": dg.MetadataValue.float(round(result.smoke_seconds, 3)),
            "backup_bytes": dg.MetadataValue.int(result.backup_bytes),
            "database_bytes": dg.MetadataValue.int(result.database_bytes),
            "rows": dg.MetadataValue.int(result.rows),
            "tables": dg.MetadataValue.int(result.tables),
            "digests_checked": dg.MetadataValue.int(result.fingerprints_checked),
            "backup_age_hours": dg.MetadataValue.float(round(result.backup_age_hours, 2)),
            "snapshot_time": dg.MetadataValue.timestamp(result.snapshot_time),
        }
    )


restore_drill_job = dg.define_asset_job(
    "restore_drill_job",
    selection=dg.AssetSelection.assets(restore_drill),
    executor_def=dg.in_process_executor,
)


def drill_schedule(receiver: settings.ReceiverSettings, shared: settings.SharedSettings):
    return dg.ScheduleDefinition(
        name="restore_drill_schedule",
        job=restore_drill_job,
        cron_schedule=daily_cron(receiver.drill_at),
        execution_timezone=shared.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily restore drill (ARB_DRILL_AT, after the complete backup is loaded)",
    )


def drill_resources(receiver: settings.ReceiverSettings) -> dict:
    return {
        "restore_drill_settings": RestoreDrillSettings(
            maintenance_dsn=dg.EnvVar(settings.DRILL_DSN.name) if receiver.drill_dsn else "",
            psql=receiver.psql,
        )
    }
