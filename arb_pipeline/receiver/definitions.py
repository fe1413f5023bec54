"""The receiver's code location (TranSappViz): inbox sensor and loaded-table assets.

Settings come from ARB_* environment variables (docs/settings.md), read once here.
"""

import dagster as dg

from arb_pipeline import settings
from arb_pipeline.dagster_common.alert_sensors import alert_mailer_from_environment, alert_sensors
from arb_pipeline.dagster_common.partitions import SHARED
from arb_pipeline.receiver.assets import CATALOG, load_complete, load_partial
from arb_pipeline.receiver.drill_assets import (
    drill_resources,
    drill_schedule,
    restore_drill,
    restore_drill_job,
)
from arb_pipeline.receiver.postprocess_assets import (
    POSTPROCESS_ASSETS,
    postprocess_job,
    postprocess_sensor,
    postprocess_settings_from_environment,
)
from arb_pipeline.receiver.resources import from_environment
from arb_pipeline.receiver.sensors import inbox_sensor, load_complete_job, load_partial_job

RECEIVER = settings.ReceiverSettings.from_env()
# The TranSapp derivations exist only for a catalog that asks for them (postprocess = "transapp").
POSTPROCESS = CATALOG.postprocess == "transapp"

defs = dg.Definitions(
    assets=[load_partial, load_complete, *(POSTPROCESS_ASSETS if POSTPROCESS else []), restore_drill],
    jobs=[
        load_partial_job,
        load_complete_job,
        *([postprocess_job] if POSTPROCESS else []),
        restore_drill_job,
    ],
    schedules=[drill_schedule(RECEIVER, SHARED)],
    sensors=[
        inbox_sensor,
        *([postprocess_sensor] if POSTPROCESS else []),
        *alert_sensors("receiver", [load_partial, load_complete]),
    ],
    resources={
        **from_environment(RECEIVER),
        **({"postprocess_settings": postprocess_settings_from_environment(RECEIVER)} if POSTPROCESS else {}),
        **drill_resources(RECEIVER),
        "alert_mailer": alert_mailer_from_environment(),
    },
)
