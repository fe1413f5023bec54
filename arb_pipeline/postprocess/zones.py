"""The zone of each event and report, by point in polygon.

Zones are ``AndroidRequests_zonification`` rows (WKT polygons in lon/lat, EPSG:4326),
indexed once per run in a shapely STRtree; a whole batch of points is queried at once.
A point on a zone's boundary belongs to it (``covered_by``); a point on the boundary
between zones (or in overlapping zones) gets the one with the smallest id, so the
answer never depends on order. A point in no zone, or with no coordinates, records
the problem. Where a point comes from:

* a bus-stop or bus event: its newest vote (statistics row) — the phone's position;
* a report: the user's location in its reportInfo.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely import STRtree

from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.postprocess import reportinfo
from arb_pipeline.postprocess.engine import Derivation, Source, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql

log = logging.getLogger(__name__)
PREDICATE = "covered_by"
_ZONES = app_table_sql("zonification")  # the receiver's own reference data


@dataclass(frozen=True)
class ZoneIndex:
    ids: np.ndarray  # zone ids, one per tree geometry
    tree: STRtree

    @classmethod
    def from_wkt(cls, rows) -> "ZoneIndex":
        """``rows``: (id, polygon WKT). A polygon that doesn't parse is left out, with a warning."""
        rows = list(rows)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        geoms = (
            shapely.from_wkt([r[1] for r in rows], on_invalid="ignore")
            if rows
            else np.array([], dtype=object)
        )
        ok = ~shapely.is_missing(geoms) if rows else np.array([], dtype=bool)
        for zone_id in ids[~ok]:
            log.warning("zone %s has a polygon that is not valid WKT; it is left out", zone_id)
        return cls(ids[ok], STRtree(geoms[ok]))

    @classmethod
    def load(cls, conn) -> "ZoneIndex":
        return cls.from_wkt(conn.execute(f"SELECT id, polygon_wkt FROM {_ZONES} ORDER BY id"))

    def locate(self, lon, lat) -> tuple[np.ndarray, list[str | None]]:
        """Zone id (-1 for none) and problem for each point (arrays of floats, NaN for none)."""
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        zone = np.full(len(lon), -1, dtype=np.int64)
        have = np.isfinite(lon) & np.isfinite(lat)
        if have.any() and len(self.ids):
            where = np.flatnonzero(have)
            pairs = self.tree.query(shapely.points(lon[where], lat[where]), predicate=PREDICATE)
            if pairs.shape[1]:
                point, zone_ids = pairs[0], self.ids[pairs[1]]
                order = np.lexsort((zone_ids, point))  # by point, then smallest zone id
                first_points, first = np.unique(point[order], return_index=True)
                zone[where[first_points]] = zone_ids[order][first]
        problems = [
            None if z >= 0 else ("no coordinates" if not h else f"({x}, {y}) lies in no zone")
            for z, h, x, y in zip(zone, have, lon, lat, strict=True)
        ]
        return zone, problems


def zone_frame(index: ZoneIndex, rows: pd.DataFrame, problem: pd.Series | None = None) -> pd.DataFrame:
    """id, version, longitude, latitude, zone_id, problem for rows with longitude/latitude."""
    lon = pd.to_numeric(rows["longitude"], errors="coerce").to_numpy(dtype=float)
    lat = pd.to_numeric(rows["latitude"], errors="coerce").to_numpy(dtype=float)
    zone, problems = index.locate(lon, lat)
    out = rows[["id", "version"]].copy()
    out["longitude"], out["latitude"] = lon, lat
    out["zone_id"] = pd.Series(zone, index=rows.index).astype("Int64").where(zone >= 0)
    out["problem"] = problems
    if problem is not None:  # a known reason beats "no coordinates"
        out["problem"] = problem.where(problem.notna() & out["zone_id"].isna(), out["problem"])
    return tidy(out)


def event_source(table: str, derived: str, stats: str) -> Source:
    """An event table whose location is its newest vote; a new vote makes it pending.
    The batch's newest votes come from one set-based query over the batch's ids."""
    fetch = "s.id, s.arb_changed_at::text AS version, v.longitude, v.latitude"
    return Source(
        table,
        derived,
        ("longitude", "latitude", "zone_id"),
        fetch,
        extra=(
            f'SELECT DISTINCT x."reportOfEvent_id" FROM {quote_ident(stats)} x '
            f'LEFT JOIN {derived} d ON d.id = x."reportOfEvent_id" '
            f"WHERE x.arb_changed_at > %(since)s AND (d.id IS NULL OR x.arb_changed_at >= d.processed_at)",
        ),
        joins=(
            'LEFT JOIN (SELECT DISTINCT ON (x."reportOfEvent_id") x."reportOfEvent_id" AS event, '
            f"x.longitude, x.latitude FROM {quote_ident(stats)} x "
            'WHERE x."reportOfEvent_id" IN (SELECT id FROM arb_pp_todo '
            f"WHERE id > %(after)s AND id <= %(upto)s) "
            f'ORDER BY x."reportOfEvent_id", x."timeStamp" DESC, x.id DESC) v ON v.event = s.id'
        ),
    )


class Zones(Derivation):
    """Zone of every bus-stop event, bus event and report."""

    name = "zones"
    sources = (
        event_source(
            app_table("eventforbusstop"),
            "arb_pp_eventforbusstop_zone",
            app_table("stadisticdatafromregistrationbusstop"),
        ),
        event_source(
            app_table("eventforbusv2"),
            "arb_pp_eventforbusv2_zone",
            app_table("stadisticdatafromregistrationbus"),
        ),
        Source(
            app_table("report"),
            "arb_pp_report_zone",
            ("longitude", "latitude", "zone_id"),
            's.id, s.arb_changed_at::text AS version, s."reportInfo" AS info',
        ),
    )

    def reference_digest(self, conn) -> str:
        digest = conn.execute(
            "SELECT md5(coalesce(string_agg(id::text || ':' || polygon_wkt, ',' ORDER BY id), '')) "
            f"FROM {_ZONES}"
        ).fetchone()[0]
        return hashlib.sha256(f"v{self.version}:{PREDICATE}:{digest}".encode()).hexdigest()

    def prepare(self, conn) -> ZoneIndex:
        return ZoneIndex.load(conn)

    def compute(self, conn, ctx: ZoneIndex, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        if "info" in rows:
            where = reportinfo.user_location(rows["info"])
            located = pd.concat([rows[["id", "version"]], where[["longitude", "latitude"]]], axis=1)
            return zone_frame(ctx, located, where["problem"])
        return zone_frame(
            ctx,
            rows,
            pd.Series(
                np.where(rows["longitude"].isna(), "the event has no vote with coordinates", None),
                index=rows.index,
            ),
        )
