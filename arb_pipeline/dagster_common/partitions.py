"""Partitions shared by both code locations: the window of a partition is the data's
time window, on both servers, so a backfill of any past window is a normal run.

They are fixed when the definitions load, from the environment:
``ARB_GO_LIVE`` (first partition, UTC, "YYYY-MM-DD" or "YYYY-MM-DD-HH-MM"; start at
go-live, not years back: 5-minute partitions make ~105k keys a year) and
``ARB_PARTIAL_MINUTES`` (the original's TIME, default 5, a divisor of 60).
Changing either later orphans existing partition keys.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import dagster as dg

from arb_pipeline.errors import ConfigError

PARTIAL_FMT = "%Y-%m-%d-%H-%M"
COMPLETE_FMT = "%Y-%m-%d"
DEFAULT_GO_LIVE = "2026-11-01"


def go_live() -> datetime:
    raw = os.environ.get("ARB_GO_LIVE", DEFAULT_GO_LIVE)
    for fmt in (PARTIAL_FMT, COMPLETE_FMT):
        try:
            return datetime.strptime(raw, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ConfigError(f"ARB_GO_LIVE={raw!r} is not a date: use YYYY-MM-DD or YYYY-MM-DD-HH-MM (UTC)")


def partial_minutes() -> int:
    raw = os.environ.get("ARB_PARTIAL_MINUTES", "5")
    if not raw.isdigit() or int(raw) < 1 or 60 % int(raw):
        raise ConfigError(
            f"ARB_PARTIAL_MINUTES={raw!r} must be a whole number of minutes that divides 60 (1, 5, 10, 15 "
            "...)"
        )
    return int(raw)


def partial_partitions() -> dg.TimeWindowPartitionsDefinition:
    minutes = partial_minutes()
    start = go_live().replace(minute=go_live().minute - go_live().minute % minutes)
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=f"*/{minutes} * * * *",
        start=start.strftime(PARTIAL_FMT),
        fmt=PARTIAL_FMT,
        timezone="UTC",
    )


def complete_partitions() -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=go_live().strftime(COMPLETE_FMT), timezone="UTC")


PARTIAL = partial_partitions()
COMPLETE = complete_partitions()
