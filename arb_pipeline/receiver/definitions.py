"""The receiver's code location (TranSappViz): inbox sensor, loads, postprocessing."""

import dagster as dg

defs = dg.Definitions()
