"""The sender's code location (TranSapp, production): backup assets and schedules.

Settings come from ARB_* environment variables (docs/settings.md), read once here.
"""

import dagster as dg

from arb_pipeline import settings
from arb_pipeline.capture.chain import CAPTURE
from arb_pipeline.dagster_common.alert_sensors import alert_mailer_from_environment, alert_sensors
from arb_pipeline.dagster_common.partitions import SHARED
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.capture_slot import make_capture_slot_sensor
from arb_pipeline.sender.connectivity import (
    connectivity_schedule,
    receiver_connectivity,
    receiver_connectivity_job,
)
from arb_pipeline.sender.resources import from_environment
from arb_pipeline.sender.schedules import backup_schedules, complete_backup_job, partial_backup_job

SENDER = settings.SenderSettings.from_env()

defs = dg.Definitions(
    assets=[partial_backup, complete_backup, receiver_connectivity],
    jobs=[partial_backup_job, complete_backup_job, receiver_connectivity_job],
    schedules=[*backup_schedules(SENDER, SHARED), connectivity_schedule(SENDER)],
    sensors=[
        *alert_sensors("sender", [partial_backup, complete_backup]),
        make_capture_slot_sensor(
            settings.CaptureSettings.from_env(),
            resync_job=complete_backup_job if SENDER.partial_source == CAPTURE else None,
        ),
    ],
    resources={**from_environment(SENDER), "alert_mailer": alert_mailer_from_environment()},
)
