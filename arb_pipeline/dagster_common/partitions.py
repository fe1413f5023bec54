"""Partitions shared by both code locations: the window of a partition is the data's
time window, on both servers, so a backfill of any past window is a normal run.

They are fixed when the definitions load, from ``ARB_GO_LIVE`` and ``ARB_PARTIAL_MINUTES``
(settings.SharedSettings). Partials start at go-live (not years back: 5-minute partitions
make ~105k keys a year); the daily completes start the day before, so the complete a new
receiver starts from exists on go-live day, and the UI shows no partition missing that
was never due. Changing either setting later orphans existing partition keys.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from arb_pipeline.settings import SharedSettings
from arb_pipeline.settings.setting import PARTITION_FORMATS

PARTIAL_FMT, COMPLETE_FMT = PARTITION_FORMATS
# Dagster's tags on a run over a range of partitions (a single-run backfill, a ranged request).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def partial_partitions(shared: SharedSettings) -> dg.TimeWindowPartitionsDefinition:
    minutes, go_live = shared.partial_minutes, shared.go_live
    start = go_live.replace(minute=go_live.minute - go_live.minute % minutes)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"*/{minutes} * * * *",
        start=start.strftime(PARTIAL_FMT),
        fmt=PARTIAL_FMT,
        timezone="UTC",
    )


def complete_partitions(shared: SharedSettings) -> dg.DailyPartitionsDefinition:
    first_day = shared.go_live - timedelta(days=1)  # the baseline: the day before go-live
    return dg.DailyPartitionsDefinition(start_date=first_day.strftime(COMPLETE_FMT), timezone="UTC")


SHARED = SharedSettings.from_env()
PARTIAL = partial_partitions(SHARED)
COMPLETE = complete_partitions(SHARED)
