"""Partitions shared by both code locations: the window of a partition is the data's
time window, on both servers, so a backfill of any past window is a normal run.

They are fixed when the definitions load, from ``ARB_GO_LIVE`` (the first partition; start
at go-live, not years back: 5-minute partitions make ~105k keys a year) and
``ARB_PARTIAL_MINUTES`` (settings.SharedSettings). Changing either later orphans existing
partition keys.
"""

from __future__ import annotations

import dagster as dg

from arb_pipeline.settings import SharedSettings
from arb_pipeline.settings.setting import PARTITION_FORMATS

PARTIAL_FMT, COMPLETE_FMT = PARTITION_FORMATS


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
    return dg.DailyPartitionsDefinition(start_date=shared.go_live.strftime(COMPLETE_FMT), timezone="UTC")


SHARED = SharedSettings.from_env()
PARTIAL = partial_partitions(SHARED)
COMPLETE = complete_partitions(SHARED)
