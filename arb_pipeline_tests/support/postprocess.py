"""What postprocessing derives from which replicated table, and the check that it is current."""

from __future__ import annotations

from arb_pipeline.pg.connect import connect

P = "AndroidRequests_"
DERIVED_SOURCES = {  # derived table -> the replicated table its rows come from
    "arb_pp_eventforbusstop_period": P + "eventforbusstop",
    "arb_pp_eventforbusv2_period": P + "eventforbusv2",
    "arb_pp_busv2_plate": P + "busv2",
    "arb_pp_report_info": P + "report",
    "arb_pp_eventforbusstop_zone": P + "eventforbusstop",
    "arb_pp_eventforbusv2_zone": P + "eventforbusv2",
    "arb_pp_report_zone": P + "report",
    "arb_pp_eventforbusv2_direction": P + "eventforbusv2",
    "arb_pp_eventforbusv2_nearest_stops": P + "eventforbusv2",
}


def assert_every_row_derived(dsn: str) -> None:
    """Every source row has its derived rows, computed from its current version."""
    stale = {}
    with connect(dsn) as conn:
        for derived, source in DERIVED_SOURCES.items():
            n = conn.execute(
                f'SELECT count(*) FROM "{source}" s LEFT JOIN {derived} d USING (id) '
                "WHERE d.id IS NULL OR d.source_changed_at IS DISTINCT FROM s.arb_changed_at"
            ).fetchone()[0]
            if n:
                stale[derived] = n
    assert not stale, f"derived rows missing or not from their source row's current version: {stale}"
