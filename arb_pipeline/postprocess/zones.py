"""The zone of each event, by point in polygon in PostGIS.

Zones are TranSappViz's ``AndroidRequests_zonificationtransantiago`` (``geom``
MultiPolygon, EPSG:4326, a GiST index; ``arb zones import`` loads a shapefile). Each
batch is one statement: ``ST_Intersects`` of the event's point with the zones the
index finds, as TranSappViz's transform (``geom__intersects``) does, so a point on a
zone's boundary belongs to it; a point in two zones (a shared boundary) gets the one
with the smallest id, so the answer never depends on order. The result goes to
``zonification_id`` of both event tables. A point in no zone, or an event without a
vote with coordinates, records the problem. The event's point is its newest vote
(statistics row): the phone's position. A report's zone (the user's location) is
written with its reportinfo row (reportinfo.py), from :func:`zone_of`.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

from arb_pipeline.pg.quote import quote_ident
from arb_pipeline.postprocess.engine import OUT, TODO, Derivation, Source
from arb_pipeline.postprocess.tables import app_table, app_table_sql

ZONES = app_table_sql("zonificationtransantiago")
PREDICATE = "ST_Intersects"
NO_VOTE = "the event has no vote with coordinates"


def zone_of(lon: str, lat: str) -> str:
    """SQL for the zone id of the point (lon, lat) (EPSG:4326 degrees): an index search."""
    return (
        f"(SELECT z.id FROM {ZONES} z WHERE {PREDICATE}(z.geom, "
        f"ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)) ORDER BY z.id LIMIT 1)"
    )


def zones_digest(conn) -> str:
    """Changes when a zone is added, removed or reshaped (a new zoning recomputes)."""
    return conn.execute(
        "SELECT md5(coalesce(string_agg(id::text || ':' || md5(ST_AsBinary(geom)), ',' ORDER BY id), '')) "
        f"FROM {ZONES}"
    ).fetchone()[0]


def newest_vote(stats: str) -> str:
    """A join giving ``v.longitude``, ``v.latitude`` of each batch event's newest vote
    (one set-based query over the batch's ids); ``s`` is the event."""
    return (
        'LEFT JOIN (SELECT DISTINCT ON (x."reportOfEvent_id") x."reportOfEvent_id" AS event, '
        f"x.longitude, x.latitude FROM {quote_ident(stats)} x "
        f'WHERE x."reportOfEvent_id" IN (SELECT id FROM {TODO} '
        "WHERE id > %(after)s AND id <= %(upto)s) "
        f'ORDER BY x."reportOfEvent_id", x."timeStamp" DESC, x.id DESC) v ON v.event = s.id'
    )


def new_votes(stats: str) -> str:
    """Events a vote arrived for since the last run (their location may have moved)."""
    return (
        f'SELECT DISTINCT x."reportOfEvent_id" FROM {quote_ident(stats)} x WHERE x.arb_changed_at > %(since)s'
    )


def event_source(table: str, stats: str, columns: tuple[str, ...]) -> Source:
    """An event table whose location is its newest vote; a new vote makes it pending."""
    return Source(table, columns, extra=(new_votes(stats),), joins=newest_vote(stats))


class Zones(Derivation):
    """Zone of every bus-stop event and bus event."""

    name = "zones"
    version = "2"  # PostGIS, TranSappViz's zones and columns
    sources = (
        event_source(
            app_table("eventforbusstop"),
            app_table("stadisticdatafromregistrationbusstop"),
            ("zonification_id",),
        ),
        event_source(
            app_table("eventforbusv2"), app_table("stadisticdatafromregistrationbus"), ("zonification_id",)
        ),
    )

    def reference_digest(self, conn) -> str:
        return hashlib.sha256(f"v{self.version}:{PREDICATE}:{zones_digest(conn)}".encode()).hexdigest()

    def fill(self, conn, ctx, source: Source, bounds: dict) -> None:
        # The batch's points get their own GiST index, so the join can run zone by zone:
        # PostGIS then prepares each zone's polygon once for all the points in it, instead
        # of testing every point against an unprepared polygon.
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE arb_pp_points ON COMMIT DROP AS SELECT s.id, v.longitude, v.latitude, "
                "ST_SetSRID(ST_MakePoint(v.longitude, v.latitude), 4326) AS pt "
                f"FROM {TODO} t JOIN {{src}} s ON s.id = t.id {source.joins} "
                "WHERE t.id > %(after)s AND t.id <= %(upto)s"
            ).format(src=sql.Identifier(source.table)),
            bounds,
        )
        conn.execute("CREATE INDEX ON arb_pp_points USING gist (pt)")
        conn.execute("ANALYZE arb_pp_points")
        conn.execute(
            f"INSERT INTO {OUT} (id, zonification_id, problem) "
            "SELECT p.id, m.zone, CASE WHEN p.pt IS NULL THEN %(no_vote)s "
            "WHEN m.zone IS NULL THEN format('(%%s, %%s) lies in no zone', p.longitude, p.latitude) END "
            "FROM arb_pp_points p LEFT JOIN (SELECT DISTINCT ON (p.id) p.id, z.id AS zone "
            f"FROM {ZONES} z JOIN arb_pp_points p ON {PREDICATE}(z.geom, p.pt) ORDER BY p.id, z.id) m "
            "ON m.id = p.id",
            {"no_vote": NO_VOTE},
        )
        conn.execute("DROP TABLE arb_pp_points")
