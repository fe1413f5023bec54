"""The receiver's postprocessing: derivations from the replicated tables into tables the
receiver owns (plain Python and SQL; the Dagster assets in receiver/postprocess_assets.py
wrap them). Each derivation is incremental (engine.py) and writes one row per source row.

    periods.EventPeriods        time period and half-hour period of each event
    plates.BusPlates            normalised licence plates
    reportinfo.ReportInfo       each report's reportInfo parsed into a row
    zones.Zones                 zone of each event and report (point in polygon)
    direction.BusEventDirection direction of each bus event from the phone's latest trip
    nearest.NearestStops        the two stops nearest to each bus event
"""

from __future__ import annotations

from arb_pipeline.postprocess.direction import BusEventDirection
from arb_pipeline.postprocess.engine import Derivation, RunResult, Scope, run_derivation
from arb_pipeline.postprocess.nearest import NearestStops
from arb_pipeline.postprocess.periods import EventPeriods
from arb_pipeline.postprocess.plates import BusPlates
from arb_pipeline.postprocess.reportinfo import ReportInfo
from arb_pipeline.postprocess.zones import Zones


def all_derivations(
    *, timezone: str | None = None, direction_max_gap_minutes: int | None = None
) -> list[Derivation]:
    """Every derivation, in a sensible order (none reads another's output)."""
    return [
        EventPeriods(timezone),
        BusPlates(),
        ReportInfo(),
        Zones(),
        BusEventDirection(direction_max_gap_minutes),
        NearestStops(),
    ]


def run_all(dsn: str, scope: Scope = Scope(), **settings) -> list[RunResult]:
    return [run_derivation(dsn, d, scope) for d in all_derivations(**settings)]


__all__ = [
    "BusEventDirection",
    "BusPlates",
    "Derivation",
    "EventPeriods",
    "NearestStops",
    "ReportInfo",
    "RunResult",
    "Scope",
    "Zones",
    "all_derivations",
    "run_all",
    "run_derivation",
]
