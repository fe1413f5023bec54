"""Equivalence with TranSappViz's transform.py, continued (test_transappviz_equivalence.py
has periods, plates and reports): zones, nearest stops, direction and the ``transformed``
marker, one test per row of docs/transappviz-equivalence.md, on a real receiver through the
derivation engine, asserting on TranSappViz's columns.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.transappviz import (
    BUS_UUID,
    EAST_100M,
    IN_1,
    IN_2,
    NORTH_110M,
    NOWHERE,
    PHONE,
    P,
    at,
    bus_event,
    bus_info,
    derive,
    periods,
    problems,
    query,
    report,
    report_info,
    seed_city,
    seed_stops,
    stop_event,
    trip,
    zones_of,
)

# -- Z: zones ------------------------------------------------------------------------------


def test_Z1_zone_of_the_newest_vote_point_in_polygon(city):
    """An event's zone is where its newest vote was (PostGIS intersects: a point on a
    boundary belongs to the zone; on the edge two zones share, the smaller id); a point
    in no zone leaves it NULL and records the problem."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        bus_event(conn, 1, t, votes=[IN_1, IN_2])  # moved: newest vote in zone 2
        bus_event(conn, 2, t, votes=[(-70.60, -33.43)])  # on the shared edge
        bus_event(conn, 3, t, votes=[NOWHERE])
        bus_event(conn, 4, t, votes=[(-70.62, -33.44)])  # a corner of zone 1 only
        stop_event(conn, 1, t, vote=IN_2)
        stop_event(conn, 2, t, vote=NOWHERE)
    derive(city)
    assert zones_of(city, "eventforbusv2") == {1: "Las Condes", 2: "Providencia", 3: None, 4: "Providencia"}
    assert zones_of(city, "eventforbusstop") == {1: "Las Condes", 2: None}
    assert set(problems(city, "eventforbusv2", "zones")) == {3}
    assert set(problems(city, "eventforbusstop", "zones")) == {2}


def test_Z2_a_later_vote_moves_the_event_to_its_new_zone(city):
    """The original set ``transformed`` and never looked at the row again; a vote that
    arrives later (a load changes the event) recomputes its zone here."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        bus_event(conn, 1, t, votes=[IN_1])
    derive(city)
    assert zones_of(city, "eventforbusv2") == {1: "Providencia"}
    with connect(city) as conn:  # what a load of the next partial does
        conn.execute(
            f'INSERT INTO "{P}stadisticdatafromregistrationbus" (longitude, latitude, "timeStamp", '
            '"confirmDecline", "phoneId", "reportOfEvent_id") VALUES (%s, %s, %s, \'confirm\', %s, 1)',
            (*IN_2, t + timedelta(minutes=3), PHONE),
        )
        conn.execute(
            f'UPDATE "{P}eventforbusv2" SET "timeStamp" = %s, "eventConfirm" = 2, '
            "arb_changed_at = clock_timestamp() WHERE id = 1",
            (t + timedelta(minutes=3),),
        )
    derive(city)
    assert zones_of(city, "eventforbusv2") == {1: "Las Condes"}
    assert query(city, f'SELECT transformed FROM "{P}eventforbusv2"') == [(True,)]


def test_Z3_transappviz_s_own_test_point_in_the_real_zoning(zoned_receiver_db):
    """TranSappViz's own test (AddCountyTestCase) expects a zone at Beauchef 851
    (-70.664253, -33.457372) in the EOD 2012 zoning: the same for events and reports here,
    in comuna Santiago."""
    beauchef = (-70.664253, -33.457372)
    t = at("2017-04-29T05:00:00+00:00")
    with connect(zoned_receiver_db) as conn:
        seed_city(conn, zones=False)
        bus_event(conn, 1, t, votes=[beauchef])
        stop_event(conn, 1, t, vote=beauchef)
        stop = {"id": "PH217", "longitude": beauchef[0], "latitude": beauchef[1]}
        report(
            conn, 1, {"locationUser": {"latitude": beauchef[1], "longitude": beauchef[0]}, "bus_stop": stop}
        )
    derive(zoned_receiver_db)
    assert zones_of(zoned_receiver_db, "eventforbusv2") == {1: "Santiago"}
    assert zones_of(zoned_receiver_db, "eventforbusstop") == {1: "Santiago"}
    assert report_info(zoned_receiver_db)[1]["comuna"] == "Santiago"


# -- N: nearest stops ----------------------------------------------------------------------


def test_N1_the_two_nearest_stops_in_metres_of_the_gtfs_version_in_force(city):
    """The original (broken at HEAD) ranked every stop of every GTFS version by distance
    in degrees; here the stops of the version in force when the event was created, by
    distance on the ground."""
    with connect(city) as conn:
        seed_stops(conn)
        bus_event(conn, 1, at("2026-11-25T15:00:00+00:00"), votes=[IN_1])
    derive(city)
    assert query(city, f'SELECT "busStop1", "busStop2" FROM "{P}eventforbusv2"') == [("PA1", "PA2")]


def test_N2_busstop_point_as_transappviz_writes_it(city):
    """TranSappViz's transform writes ``point`` as Point(longitude, latitude) with the
    field's SRID 32140 (no reprojection) and marks the stop ``transformed``: the same here."""
    with connect(city) as conn:
        seed_stops(conn)
        stop_event(conn, 1, at("2026-11-25T15:00:00+00:00"))
        bus_event(conn, 1, at("2026-11-25T15:00:00+00:00"), votes=[IN_1])
    derive(city)
    rows = query(
        city,
        f'SELECT code, ST_X(point), ST_Y(point), ST_SRID(point), transformed FROM "{P}busstop" '
        "WHERE point IS NOT NULL ORDER BY id",
    )
    assert [r[0] for r in rows] == ["OLD1", "PA1", "PA2", "PA3"], "every stop has its point"
    for code, x, y, srid, transformed in rows:
        lon, lat = {"OLD1": IN_1, "PA1": EAST_100M, "PA2": NORTH_110M, "PA3": IN_2}[code]
        assert (x, y, srid, transformed) == (pytest.approx(lon), pytest.approx(lat), 32140, True), code


# -- D: direction --------------------------------------------------------------------------


def test_D1_direction_from_the_phone_s_latest_trip(city):
    """The direction of the token of the same phone's latest pose at or before the event;
    for bus reports, at or before the report. Here the event's creation counts and a pose
    more than ARB_DIRECTION_MAX_GAP_MINUTES (60) older says nothing; the original compared
    the event's last update, which other phones' votes move, and had no limit (D1, decided)."""
    t = at("2026-11-25T15:00:00+00:00")
    other = uuid.UUID(int=78)
    with connect(city) as conn:
        trip(conn, 1, "I", t - timedelta(minutes=10))
        trip(conn, 2, "R", t + timedelta(minutes=10))
        trip(conn, 3, "R", t - timedelta(hours=2), phone=other)
        bus_event(conn, 1, t, votes=[IN_1], updated=t + timedelta(minutes=20))
        report(conn, 1, bus_info("ABCD12", machine=str(BUS_UUID)), when=t)
        report(conn, 2, bus_info("ABCD12", machine=str(BUS_UUID)), when=t, phone=other)
        conn.execute(
            f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
            "busassignment_id) VALUES (2, %s, %s, 'evn00000', %s, 1)",
            (t, t, other),
        )
    derive(city)
    assert query(city, f'SELECT id, direction FROM "{P}eventforbusv2" ORDER BY id') == [(1, "I"), (2, None)]
    assert {k: v["direction"] for k, v in report_info(city).items()} == {1: "I", 2: None}


# -- T: the transformed marker ---------------------------------------------------------------


def test_T1_rows_are_marked_transformed(city):
    """TranSappViz's own marker: a row every derivation has passed reads ``transformed``
    (its transform.py, if still run, skips it); a row a load changes is recomputed."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        bus_event(conn, 1, t)
        stop_event(conn, 1, t)
        report(conn, 1, bus_info("ABCD12", machine=str(BUS_UUID)))
    derive(city)
    for table in ("eventforbusv2", "eventforbusstop", "report"):
        assert query(city, f'SELECT bool_and(transformed) FROM "{P}{table}"') == [(True,)], table
    assert query(city, f'SELECT bool_and(transformed) FROM "{P}reportinfo"') == [(True,)]


def test_T2_every_row_a_load_brings_is_derived_whatever_its_time_stamp(city):
    """The original looked only at rows whose ``timeStamp`` fell in the minutes before the
    backup's file name; a row a later load brings with an old ``timeStamp`` is derived here
    (an incremental run: the first one has run already)."""
    derive(city)
    with connect(city) as conn:
        bus_event(conn, 1, at("2025-11-26T12:00:00+00:00"))  # a year old: Wednesday 09:00 -03
    derive(city)
    assert periods(city, "eventforbusv2") == {1: ("Laboral", "Transicion punta mañana", "09:00 - 09:29")}
    assert query(city, f'SELECT transformed FROM "{P}eventforbusv2"') == [(True,)]
