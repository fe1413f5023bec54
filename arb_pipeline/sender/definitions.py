"""The sender's code location (TranSapp, production): backup assets and schedules.

Settings come from ARB_* environment variables (README, "Settings").
"""

import dagster as dg

from arb_pipeline.dagster_common.alert_sensors import alert_mailer_from_environment, alert_sensors
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.connectivity import (
    receiver_connectivity,
    receiver_connectivity_job,
    receiver_connectivity_schedule,
)
from arb_pipeline.sender.resources import from_environment
from arb_pipeline.sender.schedules import (
    complete_backup_job,
    complete_backup_schedule,
    partial_backup_job,
    partial_backup_schedule,
)

defs = dg.Definitions(
    assets=[partial_backup, complete_backup, receiver_connectivity],
    jobs=[partial_backup_job, complete_backup_job, receiver_connectivity_job],
    schedules=[partial_backup_schedule, complete_backup_schedule, receiver_connectivity_schedule],
    sensors=[*alert_sensors("sender", [partial_backup, complete_backup])],
    resources={**from_environment(), "alert_mailer": alert_mailer_from_environment()},
)
