"""Dagster helpers both code locations share: partitions, freshness policies, the alert
email sensors and the dead-run sensor. The only place besides sender/ and receiver/ that imports Dagster.
"""
