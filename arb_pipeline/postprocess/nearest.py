"""The two bus stops nearest to each bus event.

The event's location is its newest vote's (as for zones). Stops are those of the GTFS
version in force when the event was created (the newest version created at or before
it; the oldest version for events older than every version). Coordinates are projected
to metres on a local equirectangular plane centred on the stops (within a city the
distortion is far below a stop's spacing: < 0.1 % over 50 km), and a scipy cKDTree per
GTFS version answers a whole batch at once (the original looped over every stop for
every event). Distances are in metres on that plane.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from arb_pipeline.postprocess.engine import Derivation, Source, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.postprocess.zones import event_source

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Plane:
    """A local equirectangular projection: (lon, lat) degrees to (x, y) metres."""

    lon0: float
    lat0: float

    def project(self, lon, lat) -> np.ndarray:
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        k = np.pi / 180 * EARTH_RADIUS_M
        return np.column_stack(((lon - self.lon0) * k * np.cos(np.radians(self.lat0)), (lat - self.lat0) * k))


@dataclass(frozen=True)
class StopVersion:
    gtfs_id: int
    created_us: int
    codes: np.ndarray
    tree: cKDTree | None


@dataclass(frozen=True)
class StopSet:
    plane: Plane
    versions: list[StopVersion]  # by creation time

    @classmethod
    def from_rows(cls, gtfs, stops) -> "StopSet":
        """``gtfs``: (id, created µs); ``stops``: (gtfs_id, code, longitude, latitude)."""
        frame = pd.DataFrame(list(stops), columns=["gtfs_id", "code", "longitude", "latitude"])
        plane = Plane(
            float(frame["longitude"].mean()) if len(frame) else 0.0,
            float(frame["latitude"].mean()) if len(frame) else 0.0,
        )
        versions = []
        for gtfs_id, created_us in sorted(gtfs, key=lambda g: (g[1], g[0])):
            mine = frame[frame["gtfs_id"] == gtfs_id].sort_values("code", kind="stable")
            tree = cKDTree(plane.project(mine["longitude"], mine["latitude"])) if len(mine) else None
            versions.append(StopVersion(gtfs_id, created_us, mine["code"].to_numpy(dtype=object), tree))
        return cls(plane, versions)

    @classmethod
    def load(cls, conn) -> "StopSet":
        return cls.from_rows(
            conn.execute(
                'SELECT id, (extract(epoch FROM "timeCreation") * 1000000)::int8 '
                f"FROM {app_table_sql('gtfs')}"
            ),
            conn.execute(f"SELECT gtfs_id, code, longitude, latitude FROM {app_table_sql('busstop')}"),
        )

    def version_index(self, created_us: np.ndarray) -> np.ndarray:
        """Index into ``versions`` of the version in force at each instant."""
        starts = np.array([v.created_us for v in self.versions], dtype=np.int64)
        return np.clip(np.searchsorted(starts, created_us, side="right") - 1, 0, None)

    def nearest_two(self, lon, lat, created_us) -> pd.DataFrame:
        """gtfs_id, stop1_code, stop1_distance_m, stop2_code, stop2_distance_m, problem per point."""
        lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        n = len(lon)
        out = pd.DataFrame(
            {
                "gtfs_id": pd.array([None] * n, dtype="Int64"),
                "stop1_code": [None] * n,
                "stop1_distance_m": np.nan,
                "stop2_code": [None] * n,
                "stop2_distance_m": np.nan,
                "problem": [None] * n,
            }
        )
        have = np.isfinite(lon) & np.isfinite(lat)
        out.loc[~have, "problem"] = "the event has no vote with coordinates"
        if not self.versions:
            out.loc[have, "problem"] = "no GTFS version: no bus stops to compare with"
            return tidy(out)
        which = self.version_index(np.nan_to_num(np.asarray(created_us, dtype=float)).astype(np.int64))
        for k, version in enumerate(self.versions):
            rows = np.flatnonzero(have & (which == k))
            if not len(rows):
                continue
            out.loc[rows, "gtfs_id"] = version.gtfs_id
            if version.tree is None or version.tree.n < 2:
                out.loc[rows, "problem"] = f"GTFS version {version.gtfs_id} has fewer than two bus stops"
                continue
            dist, idx = version.tree.query(self.plane.project(lon[rows], lat[rows]), k=2)
            out.loc[rows, "stop1_code"] = version.codes[idx[:, 0]]
            out.loc[rows, "stop2_code"] = version.codes[idx[:, 1]]
            out.loc[rows, "stop1_distance_m"] = dist[:, 0]
            out.loc[rows, "stop2_distance_m"] = dist[:, 1]
        return tidy(out)


_COLUMNS = (
    "longitude",
    "latitude",
    "gtfs_id",
    "stop1_code",
    "stop1_distance_m",
    "stop2_code",
    "stop2_distance_m",
)


def _source() -> Source:
    base = event_source(
        app_table("eventforbusv2"),
        "arb_pp_eventforbusv2_nearest_stops",
        app_table("stadisticdatafromregistrationbus"),
    )
    return Source(
        base.table,
        base.derived,
        _COLUMNS,
        base.fetch + ', (extract(epoch FROM s."timeCreation") * 1000000)::int8 AS created_us',
        extra=base.extra,
        joins=base.joins,
    )


class NearestStops(Derivation):
    """The two stops nearest to every bus event (``arb_pp_eventforbusv2_nearest_stops``)."""

    name = "bus_event_nearest_stops"
    sources = (_source(),)

    def reference_digest(self, conn) -> str:
        stops, versions = conn.execute(
            "SELECT (SELECT md5(coalesce(string_agg("
            "concat_ws(':', id, gtfs_id, code, longitude, latitude), ',' "
            f"        ORDER BY id), '')) FROM {app_table_sql('busstop')}), "
            "(SELECT md5(coalesce(string_agg(concat_ws(':', id, \"timeCreation\"), ',' ORDER BY id), '')) "
            f"        FROM {app_table_sql('gtfs')})"
        ).fetchone()
        return hashlib.sha256(f"v{self.version}:{stops}:{versions}".encode()).hexdigest()

    def prepare(self, conn) -> StopSet:
        return StopSet.load(conn)

    def compute(self, conn, ctx: StopSet, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        lon = pd.to_numeric(rows["longitude"], errors="coerce").to_numpy(dtype=float)
        lat = pd.to_numeric(rows["latitude"], errors="coerce").to_numpy(dtype=float)
        found = ctx.nearest_two(lon, lat, rows["created_us"].to_numpy(dtype=float))
        found.index = rows.index
        out = rows[["id", "version"]].copy()
        out["longitude"], out["latitude"] = lon, lat
        return pd.concat([out, found], axis=1)
