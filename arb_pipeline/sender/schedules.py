"""When backups run: a partial for each window that just closed, a complete daily.

A partial tick requests the newest window that ended at least the safety delay
ago; rows committed later still arrive through the next windows' overlap.
"""

from datetime import timedelta

import dagster as dg

from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.settings import SenderSettings, SharedSettings
from arb_pipeline.settings.setting import daily_cron

# One step per run: the in-process executor saves a process start per run.
partial_backup_job = dg.define_asset_job(
    "partial_backup_job",
    selection=dg.AssetSelection.assets(partial_backup),
    executor_def=dg.in_process_executor,
    tags={"arb/kind": "partial"},
)
complete_backup_job = dg.define_asset_job(
    "complete_backup_job",
    selection=dg.AssetSelection.assets(complete_backup),
    executor_def=dg.in_process_executor,
    tags={"arb/kind": "complete"},
)


def safety_delay(sender: SenderSettings, shared: SharedSettings) -> timedelta:
    return timedelta(minutes=min(sender.partial_delay_minutes, shared.partial_minutes - 1))


def last_closed_key(
    partitions_def: dg.TimeWindowPartitionsDefinition, now, delay: timedelta, length: timedelta
) -> str | None:
    """The newest partition whose window ended at or before ``now - delay``."""
    inside = now - delay - length  # a moment in the last closed window
    if inside < partitions_def.start:
        return None
    return partitions_def.get_partition_key_for_timestamp(inside.timestamp())


def backup_schedules(sender: SenderSettings, shared: SharedSettings) -> list[dg.ScheduleDefinition]:
    """The partial schedule (each window, the safety delay after it closes) and the daily complete."""
    minutes, delay = shared.partial_minutes, safety_delay(sender, shared)
    offset = int(delay.total_seconds() // 60)

    @dg.schedule(
        name="partial_backup_schedule",
        cron_schedule=f"{offset}-59/{minutes} * * * *" if minutes > 1 else "* * * * *",
        job=partial_backup_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def partial_backup_schedule(context: dg.ScheduleEvaluationContext):
        key = last_closed_key(PARTIAL, context.scheduled_execution_time, delay, timedelta(minutes=minutes))
        if key is None:
            return dg.SkipReason("no partial window has closed yet since ARB_GO_LIVE")
        return dg.RunRequest(run_key=f"partial-{key}", partition_key=key)

    @dg.schedule(
        name="complete_backup_schedule",
        cron_schedule=daily_cron(sender.complete_at),
        job=complete_backup_job,
        execution_timezone=shared.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def complete_backup_schedule(context: dg.ScheduleEvaluationContext):
        key = last_closed_key(COMPLETE, context.scheduled_execution_time, timedelta(0), timedelta(days=1))
        if key is None:
            return dg.SkipReason("no day has closed yet since ARB_GO_LIVE")
        return dg.RunRequest(run_key=f"complete-{key}", partition_key=key)

    return [partial_backup_schedule, complete_backup_schedule]
