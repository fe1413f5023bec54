"""The sender's code location (TranSapp, production): backup assets and schedules.

Settings come from ARB_* environment variables (README, "Settings").
"""

import dagster as dg

from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.resources import from_environment
from arb_pipeline.sender.schedules import (
    complete_backup_job,
    complete_backup_schedule,
    partial_backup_job,
    partial_backup_schedule,
)

defs = dg.Definitions(
    assets=[partial_backup, complete_backup],
    jobs=[partial_backup_job, complete_backup_job],
    schedules=[partial_backup_schedule, complete_backup_schedule],
    resources=from_environment(),
)
