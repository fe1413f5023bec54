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

import os
from datetime import timedelta

import dagster as dg

from arb_pipeline.dagster_common.partitions import partial_minutes
from arb_pipeline.errors import ConfigError


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be more than 0")
    return value


def partial_fail_window() -> timedelta:
    return timedelta(minutes=_number("ARB_STALE_PARTIAL_MINUTES", 3 * partial_minutes()))


def complete_fail_window() -> timedelta:
    return timedelta(hours=_number("ARB_STALE_COMPLETE_HOURS", 26))


def policy_for(kind: str) -> dg.FreshnessPolicy:
    """The FreshnessPolicy of a ``partial`` or ``complete`` asset."""
    if kind == "partial":
        fail = partial_fail_window()
        warn = fail * 2 / 3
        if warn >= timedelta(minutes=1):
            return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
        return dg.FreshnessPolicy.time_window(fail_window=fail)
    return dg.FreshnessPolicy.time_window(fail_window=complete_fail_window())
