"""The receiver's code location (TranSappViz): inbox sensor and loaded-table assets.

Settings come from ARB_* environment variables (README, "Settings").
"""

import dagster as dg

from arb_pipeline.receiver.assets import load_complete, load_partial
from arb_pipeline.receiver.resources import from_environment
from arb_pipeline.receiver.sensors import inbox_sensor, load_complete_job, load_partial_job

defs = dg.Definitions(
    assets=[load_partial, load_complete],
    jobs=[load_partial_job, load_complete_job],
    sensors=[inbox_sensor],
    resources=from_environment(),
)
