"""Licence plates normalised for display.

``DUMMYLPT`` (the app's "unknown") becomes ``No Info.``; the old format ``AAAA11`` and
the new ``BB1234`` become ``AA AA 11`` and ``BB 12 34``. Before matching, a plate is
upper-cased and stripped of spaces, dots and hyphens (clients typed ``bb-12-34``). A
plate in no known format keeps no normalised value and records the problem.

TranSappViz's transform rewrote ``busv2."registrationPlate"`` in place; here the replicated
column stays as shipped (a receiver-side rewrite would break parity with the sender, and
the next load that changes the bus would ship the raw plate back). The formatted plate
is served where a view shows a report's plate: ``AndroidRequests_reportinfo``'s own
``"registrationPlate"`` (reportinfo.py). ``bus_plates`` records the buses whose plate
matches no known format and marks the buses ``transformed``.
"""

from __future__ import annotations

import pandas as pd

from arb_pipeline.postprocess.engine import Derivation, Source, nones, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql

UNKNOWN = "No Info."
DUMMY = "DUMMYLPT"
OLD, NEW = r"[A-Z]{4}[0-9]{2}", r"[A-Z]{2}[0-9]{4}"


def normalize(raw: pd.Series) -> pd.DataFrame:
    """normalized_plate, plate_format and problem for each plate of ``raw`` (vectorised)."""
    s = raw.astype("string").str.upper().str.replace(r"[\s.\-]", "", regex=True)
    dummy = (s == DUMMY).fillna(False).astype(bool)
    old = s.str.fullmatch(OLD).fillna(False).astype(bool)
    new = s.str.fullmatch(NEW).fillna(False).astype(bool)
    spaced = s.str.slice(0, 2) + " " + s.str.slice(2, 4) + " " + s.str.slice(4, 6)
    normalized = nones(raw.index)
    normalized[old | new] = spaced[old | new].astype(object)
    normalized[dummy] = UNKNOWN
    fmt = nones(raw.index)
    fmt[dummy], fmt[old], fmt[new] = DUMMY, "AAAA11", "BB1234"
    problem = nones(raw.index)
    empty = s.isna() | (s == "")
    unknown = ~(dummy | old | new) & ~empty.fillna(True).astype(bool)
    problem[empty.fillna(True).astype(bool)] = "no plate"
    if unknown.any():
        problem[unknown] = [
            f"plate {p!r} matches no known format (AAAA11, BB1234, {DUMMY})" for p in raw[unknown]
        ]
    return tidy(pd.DataFrame({"normalized_plate": normalized, "plate_format": fmt, "problem": problem}))


class BusPlates(Derivation):
    """Every bus's plate checked (``AndroidRequests_busv2``); nothing is written to the bus."""

    name = "bus_plates"
    version = "2"
    sources = (
        Source(
            app_table("busv2"),
            (),
            's.id, s."registrationPlate" AS plate',
            # A bus has no timestamp: a window's buses are those its bus events name.
            window=f"SELECT DISTINCT ba.uuid_id FROM {app_table_sql('eventforbusv2')} e "
            f"JOIN {app_table_sql('busassignment')} ba ON ba.id = e.busassignment_id "
            'WHERE e."timeStamp" >= %(start)s::timestamptz AND e."timeStamp" < %(end)s::timestamptz',
        ),
    )

    def compute(self, conn, ctx, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([rows[["id"]], normalize(rows["plate"])[["problem"]]], axis=1)
