"""The sender's code location (TranSapp, production): backup assets, schedules, checks."""

import dagster as dg

defs = dg.Definitions()
