"""The sender's code location (TranSapp, production): backup assets, schedules, the
connectivity check. The Dagster shell around extract/, package/ and transport/.
"""
