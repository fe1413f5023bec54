"""The two bus stops nearest to each bus event, by a KNN index search in PostGIS.

The event's location is its newest vote's (as for zones). Stops are those of the GTFS
version in force when the event was created (the newest version created at or before
it; the oldest version for events older than every version). TranSappViz's
``busstop.point`` (``geometry(Point, 32140)``) holds what its transform writes there:
the stop's longitude and latitude as x and y (GeoDjango gives a point without an SRID
the field's), filled here from ``longitude``/``latitude`` before each run. A GiST
index on it answers ``ORDER BY point <-> event LIMIT k`` per event, in one statement
per batch. Those are degrees, where a degree of longitude is shorter than one of
latitude, so the ``CANDIDATES`` nearest by the index are re-ranked by the distance on
the sphere (``ST_DistanceSphere``) and the two first kept: exact unless more than
``CANDIDATES`` stops lie within 1.2 times the second-nearest distance (cos 33.5° =
0.83). The codes go to ``"busStop1"``, ``"busStop2"`` of ``eventforbusv2``.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from arb_pipeline.postprocess.engine import LOAD_LOCK, OUT, TODO, Derivation, Source
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.postprocess.zones import NO_VOTE, event_source

CANDIDATES = 10
STOP_SRID = 32140  # as TranSappViz's model declares it
_STOPS = app_table_sql("busstop")
_GTFS = app_table_sql("gtfs")

# TranSappViz's point of each stop, where it is missing or stale.
_FILL_POINTS = f"""
UPDATE {_STOPS} SET point = ST_SetSRID(ST_MakePoint(longitude, latitude), {STOP_SRID}), transformed = true
WHERE point IS NULL OR transformed IS NOT TRUE OR ST_X(point) <> longitude OR ST_Y(point) <> latitude
"""

# The batch's events: location (newest vote), the GTFS version in force and the point.
_POINTS = f"""
CREATE TEMP TABLE arb_pp_points ON COMMIT DROP AS
SELECT s.id, v.longitude, v.latitude,
       coalesce(g.id, (SELECT id FROM {_GTFS} ORDER BY "timeCreation", id LIMIT 1)) AS gtfs_id,
       ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), {STOP_SRID}) AS pt
FROM {TODO} t JOIN {{src}} s ON s.id = t.id {{joins}}
LEFT JOIN (SELECT id, "timeCreation" AS lo,
                  lead("timeCreation") OVER (ORDER BY "timeCreation", id) AS hi FROM {_GTFS}) g
  ON s."timeCreation" >= g.lo AND (g.hi IS NULL OR s."timeCreation" < g.hi)
WHERE t.id > %(after)s AND t.id <= %(upto)s
"""

_FILL = f"""
INSERT INTO {OUT} (id, "busStop1", "busStop2", problem)
SELECT p.id, n.codes[1], n.codes[2],
       CASE WHEN p.longitude IS NULL OR p.latitude IS NULL THEN %(no_vote)s
            WHEN p.gtfs_id IS NULL THEN 'no GTFS version: no bus stops to compare with'
            WHEN coalesce(cardinality(n.codes), 0) < 2
            THEN format('GTFS version %%s has fewer than two bus stops', p.gtfs_id) END
FROM arb_pp_points p
LEFT JOIN LATERAL (
    SELECT array_agg(c.code ORDER BY c.d, c.code) AS codes FROM (
        SELECT k.code, ST_DistanceSphere(ST_SetSRID(k.point, 4326), ST_SetSRID(p.pt, 4326)) AS d
        FROM (SELECT b.code, b.point FROM {_STOPS} b WHERE b.gtfs_id = p.gtfs_id
              ORDER BY b.point <-> p.pt LIMIT {CANDIDATES}) k
        ORDER BY d, k.code LIMIT 2) c) n ON p.pt IS NOT NULL
"""


def _source() -> Source:
    return event_source(
        app_table("eventforbusv2"), app_table("stadisticdatafromregistrationbus"), ("busStop1", "busStop2")
    )


class NearestStops(Derivation):
    """The two stops nearest to every bus event."""

    name = "bus_event_nearest_stops"
    version = "2"  # PostGIS KNN, TranSappViz's columns
    sources = (_source(),)

    def reference_digest(self, conn) -> str:
        stops, versions = conn.execute(
            "SELECT (SELECT md5(coalesce(string_agg("
            "concat_ws(':', id, gtfs_id, code, longitude, latitude), ',' "
            f"        ORDER BY id), '')) FROM {_STOPS}), "
            "(SELECT md5(coalesce(string_agg(concat_ws(':', id, \"timeCreation\"), ',' ORDER BY id), '')) "
            f"        FROM {_GTFS})"
        ).fetchone()
        return hashlib.sha256(f"v{self.version}:{CANDIDATES}:{stops}:{versions}".encode()).hexdigest()

    def prepare(self, conn) -> None:
        with conn.transaction():  # stops are a load's rows too: not beside one
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))
            conn.execute(_FILL_POINTS)

    def fill(self, conn, ctx, source: Source, bounds: dict) -> None:
        conn.execute(
            sql.SQL(_POINTS).format(src=sql.Identifier(source.table), joins=sql.SQL(source.joins)), bounds
        )
        conn.execute(_FILL, {"no_vote": NO_VOTE})
        conn.execute("DROP TABLE arb_pp_points")
