"""The sender's hourly connectivity check: the receiver is reachable, its host key is
the one in known_hosts, the remote folder is writable and has room. The same checks as
`arb check` (arb_pipeline.ops.preflight). A failure fails the run, which emails the admins,
before the next backup finds out.
"""

import dagster as dg

from arb_pipeline.ops.preflight import FAIL, OK, destination_items
from arb_pipeline.sender.resources import BackupDestination
from arb_pipeline.settings import SenderSettings

CONNECTIVITY_KEY = dg.AssetKey(["sender", "ops", "receiver_connectivity"])


@dg.asset(
    key=CONNECTIVITY_KEY,
    group_name="sender_ops",
    kinds={"ssh"},
    description="Preflight of the backup destination: receiver reachable, host key unchanged, remote folder "
    "writable, free space above ARB_REMOTE_MIN_FREE_MB",
)
def receiver_connectivity(
    context: dg.AssetExecutionContext, backup_destination: BackupDestination
) -> dg.MaterializeResult:
    d = backup_destination
    items = destination_items(
        lambda: d.open(retries=0),
        kind=d.kind,
        host=d.host,
        port=d.port,
        min_free_bytes=int(d.min_free_mb * 1024 * 1024),
        connect_timeout=d.connect_timeout,
    )
    for item in items:
        (context.log.info if item.status == OK else context.log.warning)(
            f"{item.name}: {item.status}: {item.detail}"
        )
    metadata = {"checks": dg.MetadataValue.json([i.to_dict() for i in items])}
    for item in items:
        for name, value in item.metrics.items():
            metadata[name] = value
    failed = [i for i in items if i.status == FAIL]
    if failed:
        where = f"{d.username}@{d.host}:{d.port}{d.remote_dir}" if d.kind == "sftp" else d.local_dir
        raise dg.Failure(
            description=f"the receiver's inbox ({where}) fails its connectivity check: "
            + " | ".join(f"{i.name}: {i.detail}" + (f" Fix: {i.fix}" if i.fix else "") for i in failed),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


receiver_connectivity_job = dg.define_asset_job(
    "receiver_connectivity_job",
    selection=dg.AssetSelection.assets(receiver_connectivity),
    executor_def=dg.in_process_executor,
)


def connectivity_schedule(sender: SenderSettings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="receiver_connectivity_schedule",
        job=receiver_connectivity_job,
        cron_schedule=sender.connectivity_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Hourly check that the receiver's SFTP inbox is reachable, trusted, writable and "
        "has room",
    )
