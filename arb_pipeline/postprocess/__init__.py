"""The receiver's postprocessing: derivations from the replicated tables into the columns
and tables TranSappViz reads (plain Python, SQL and PostGIS; the Dagster assets in
receiver/postprocess_assets.py wrap them). Each derivation is incremental, and a table's derivations
write its rows in one UPDATE per batch (run.py).

    periods.EventPeriods        "timePeriod_id", "halfHourPeriod_id" of each event
    plates.BusPlates            plates checked (busv2 stays as shipped)
    reportinfo.ReportInfo       one reportinfo row per report, with its zone and direction
    zones.Zones                 zonification_id of each event (point in polygon)
    direction.BusEventDirection direction of each bus event from the phone's latest trip
    nearest.NearestStops        "busStop1", "busStop2" of each bus event (KNN)
"""

from __future__ import annotations

from arb_pipeline.postprocess.direction import BusEventDirection
from arb_pipeline.postprocess.engine import Derivation, RunResult, Scope
from arb_pipeline.postprocess.nearest import NearestStops
from arb_pipeline.postprocess.periods import EventPeriods
from arb_pipeline.postprocess.plates import BusPlates
from arb_pipeline.postprocess.reportinfo import ReportInfo
from arb_pipeline.postprocess.run import run_derivation, run_derivations
from arb_pipeline.postprocess.zones import Zones


def all_derivations(
    *, timezone: str | None = None, direction_max_gap_minutes: int | None = None
) -> list[Derivation]:
    """Every derivation, in a sensible order (none reads another's output)."""
    return [
        EventPeriods(timezone),
        BusPlates(),
        ReportInfo(direction_max_gap_minutes),
        Zones(),
        BusEventDirection(direction_max_gap_minutes),
        NearestStops(),
    ]


def covering_derivations() -> dict[str, tuple[str, ...]]:
    """Source table -> the derivations that write its rows: a row is ``transformed`` when
    all of them have computed it."""
    out: dict[str, tuple[str, ...]] = {}
    # Names and tables only: fixed settings, so a bad environment can't fail a run here.
    for d in all_derivations(timezone="UTC", direction_max_gap_minutes=60):
        for s in d.sources:
            out[s.table] = (*out.get(s.table, ()), d.name)
    return out


def run_all(dsn: str, scope: Scope = Scope(), **settings) -> list[RunResult]:
    return run_derivations(dsn, all_derivations(**settings), scope)


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
    "covering_derivations",
    "run_all",
    "run_derivation",
    "run_derivations",
]
