"""The two bus stops nearest to each bus event, by a KNN index search on the receiver.

The event's location is its newest vote's (as for zones). Stops are those of the GTFS
version in force when the event was created (the newest version created at or before
it; the oldest version for events older than every version). TranSappViz's
``busstop.point`` (``geometry(Point, 32140)``) holds what its transform writes there:
the stop's longitude and latitude as x and y (GeoDjango gives a point without an SRID
the field's), filled here from ``longitude``/``latitude`` before each run.

The search runs on a copy of the stops made per run: a temporary table of PostgreSQL
``point`` with an SP-GiST quadtree (a probe costs 16 µs on the 2-core bench machine,
against 49 µs for PostGIS's GiST on TranSappViz's geometry), each longitude multiplied
by the cosine of the stops' mean latitude. There a degree of longitude is as long as one
of latitude, so the plane's nearest are the sphere's, up to the change of that cosine
across the city (under 1% over Santiago's region, 33.0°–34.0° S). ``ORDER BY p <-> event
LIMIT CANDIDATES`` per event, one statement per batch, finds candidates; PostGIS's
``ST_DistanceSphere`` re-ranks them (ties by code): exact unless more than
``CANDIDATES`` stops lie within 1.01 times the second-nearest distance (in unscaled
degrees, ten candidates gave only 1.2 times). The codes go to ``"busStop1"``,
``"busStop2"`` of ``eventforbusv2``.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from arb_pipeline.postprocess.engine import LOAD_LOCK, OUT, TODO, Derivation, Source
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.postprocess.zones import NO_VOTE, event_source

CANDIDATES = 4
STOP_SRID = 32140  # as TranSappViz's model declares it
_STOPS = app_table_sql("busstop")
_GTFS = app_table_sql("gtfs")
SCALED = "arb_pp_stops"  # the run's copy of the stops, in a plane where distances are nearly true

# TranSappViz's point of each stop, where it is missing or stale.
_FILL_POINTS = f"""
UPDATE {_STOPS} SET point = ST_SetSRID(ST_MakePoint(longitude, latitude), {STOP_SRID}), transformed = true
WHERE point IS NULL OR transformed IS NOT TRUE OR ST_X(point) <> longitude OR ST_Y(point) <> latitude
"""

# Longitude shrunk by the cosine of the stops' mean latitude: there, a degree of longitude
# is as long as one of latitude, so the plane's nearest are (nearly) the sphere's.
_SCALE = f"SELECT cos(radians(avg(latitude))) FROM {_STOPS}"
_COPY = f"""
CREATE TEMP TABLE {SCALED} AS
SELECT gtfs_id, code, longitude, latitude, point(longitude * %(k)s, latitude) AS p FROM {_STOPS}
"""

# The batch's events: location (newest vote), the GTFS version in force and the point.
_POINTS = f"""
CREATE TEMP TABLE arb_pp_points ON COMMIT DROP AS
SELECT s.id, v.longitude, v.latitude,
       coalesce(g.id, (SELECT id FROM {_GTFS} ORDER BY "timeCreation", id LIMIT 1)) AS gtfs_id,
       point(v.longitude * %(k)s, v.latitude) AS pt
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
        SELECT k.code, ST_DistanceSphere(ST_SetSRID(ST_MakePoint(k.longitude, k.latitude), 4326),
                                         ST_SetSRID(ST_MakePoint(p.longitude, p.latitude), 4326)) AS d
        FROM (SELECT b.code, b.longitude, b.latitude FROM {SCALED} b WHERE b.gtfs_id = p.gtfs_id
              ORDER BY b.p <-> p.pt LIMIT {CANDIDATES}) k
        ORDER BY d, k.code LIMIT 2) c) n ON p.pt IS NOT NULL
"""


def _source() -> Source:
    return event_source(
        app_table("eventforbusv2"), app_table("stadisticdatafromregistrationbus"), ("busStop1", "busStop2")
    )


class NearestStops(Derivation):
    """The two stops nearest to every bus event."""

    name = "bus_event_nearest_stops"
    version = "3"  # PostGIS KNN in a plane scaled to the city's latitude, TranSappViz's columns
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

    def prepare(self, conn) -> float:
        """TranSappViz's points, and the run's scaled copy of the stops (a session's
        temporary table, with its own index); returns the longitude's scale."""
        with conn.transaction():  # stops are a load's rows too: not beside one
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOAD_LOCK,))
            conn.execute(_FILL_POINTS)
            k = conn.execute(_SCALE).fetchone()[0] or 1.0
            conn.execute(f"DROP TABLE IF EXISTS {SCALED}")
            conn.execute(_COPY, {"k": k})
        conn.execute(f"CREATE INDEX ON {SCALED} USING spgist (p quad_point_ops)")
        conn.execute(f"ANALYZE {SCALED}")
        return k

    def fill(self, conn, ctx: float, source: Source, bounds: dict) -> None:
        conn.execute(
            sql.SQL(_POINTS).format(src=sql.Identifier(source.table), joins=sql.SQL(source.joins)),
            {**bounds, "k": ctx},
        )
        conn.execute(_FILL, {"no_vote": NO_VOTE})
        conn.execute("DROP TABLE arb_pp_points")
