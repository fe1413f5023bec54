"""The receiver's code location (TranSappViz): inbox sensor and loaded-table assets.

Settings come from ARB_* environment variables (README, "Settings").
"""

import dagster as dg

from arb_pipeline.dagster_common.alert_sensors import alert_mailer_from_environment, alert_sensors
from arb_pipeline.receiver.assets import load_complete, load_partial
from arb_pipeline.receiver.drill_assets import (
    drill_resources,
    restore_drill,
    restore_drill_job,
    restore_drill_schedule,
)
from arb_pipeline.receiver.postprocess_assets import (
    POSTPROCESS_ASSETS,
    postprocess_job,
    postprocess_sensor,
    postprocess_settings_from_environment,
)
from arb_pipeline.receiver.resources import from_environment
from arb_pipeline.receiver.sensors import inbox_sensor, load_complete_job, load_partial_job

defs = dg.Definitions(
    assets=[load_partial, load_complete, *POSTPROCESS_ASSETS, restore_drill],
    jobs=[load_partial_job, load_complete_job, postprocess_job, restore_drill_job],
    schedules=[restore_drill_schedule],
    sensors=[inbox_sensor, postprocess_sensor, *alert_sensors("receiver", [load_partial, load_complete])],
    resources={
        **from_environment(),
        "postprocess_settings": postprocess_settings_from_environment(),
        **drill_resources(),
        "alert_mailer": alert_mailer_from_environment(),
    },
)
