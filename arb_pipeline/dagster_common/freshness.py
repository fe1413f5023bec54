"""Freshness policies of the assets people rely on: the sender's dumps and the
receiver's loaded tables (visible in the UI; emailed by alert_sensors).

- partials: FAIL when no new partial for ``ARB_STALE_PARTIAL_MINUTES`` (default 3x the
  cadence, ``ARB_PARTIAL_MINUTES``), WARN after 2x;
- completes: FAIL when no new complete for ``ARB_STALE_COMPLETE_HOURS`` (default 26: a
  day plus the time a complete takes to dump, move and load).

Dagster judges a partitioned asset by its last materialization of any partition, by
wall-clock time, which is what "a new backup arrived" means here.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from arb_pipeline.dagster_common.partitions import SHARED


def policy_for(kind: str) -> dg.FreshnessPolicy:
    """The FreshnessPolicy of a ``partial`` or ``complete`` asset."""
    if kind == "partial":
        fail = SHARED.partial_fail_window
        warn = fail * 2 / 3
        if warn >= timedelta(minutes=1):
            return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
        return dg.FreshnessPolicy.time_window(fail_window=fail)
    return dg.FreshnessPolicy.time_window(fail_window=SHARED.complete_fail_window)
