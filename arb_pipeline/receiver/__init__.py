"""The receiver's code location (TranSappViz): the inbox sensor, load and postprocess assets,
the restore drill. The Dagster shell around receive/, load/, postprocess/ and restore/.
"""
