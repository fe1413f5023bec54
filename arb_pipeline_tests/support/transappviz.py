"""A small city for the equivalence tests with TranSappViz's transform
(test_transappviz_equivalence.py): two zones sharing an edge, buses in every plate format,
stops of two GTFS versions; writers for events, votes, reports and trips as loads leave
them; readers of what TranSappViz's views read (its columns and tables)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from arb_pipeline.pg.connect import connect
from arb_pipeline.postprocess import run_all

UTC = timezone.utc
P = "AndroidRequests_"
PHONE = uuid.UUID(int=77)
BUS_UUID = uuid.UUID(int=2)  # bus 2, plate ABCD12, service 506


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


# -- a small city: two zones sharing an edge, stops of two GTFS versions -----------------------

# Zone 1 (Providencia) and zone 2 (Las Condes) meet on longitude -70.60.
ZONES = [
    (1, 101.0, "Providencia", "-70.62 -33.44, -70.60 -33.44, -70.60 -33.42, -70.62 -33.42, -70.62 -33.44"),
    (2, 102.0, "Las Condes", "-70.60 -33.44, -70.58 -33.44, -70.58 -33.42, -70.60 -33.42, -70.60 -33.44"),
]
IN_1, IN_2, NOWHERE = (-70.61, -33.43), (-70.59, -33.43), (-71.50, -34.00)


def seed_city(conn, *, zones: bool = True) -> None:
    """Events, buses and a bus assignment; the two zones unless the real zoning is there."""
    conn.execute(
        f'INSERT INTO "{P}event" (id, name, category, origin, "eventType") VALUES '
        "('evn00000', 'x', 'c', 'i', 'bus'), ('evn00001', 'y', 'c', 'i', 'busStop')"
    )
    conn.execute(
        f'INSERT INTO "{P}busv2" (id, "registrationPlate", uuid) VALUES '
        f"(1, 'DUMMYLPT', '{uuid.UUID(int=1)}'), (2, 'ABCD12', '{BUS_UUID}'), "
        f"(3, 'bb1234', '{uuid.UUID(int=3)}'), (4, 'XYZ', '{uuid.UUID(int=4)}'), "
        f"(5, 'dummylpt', '{uuid.UUID(int=5)}')"
    )
    conn.execute(f"INSERT INTO \"{P}busassignment\" (id, service, uuid_id) VALUES (1, '506', 2)")
    for zid, zona, comuna, ring in ZONES if zones else ():
        conn.execute(
            f'INSERT INTO "{P}zonificationtransantiago" (id, area, zona, com, comuna, cartodb_id, '
            "created_at, updated_at, geom) VALUES (%s, 1, %s, %s, %s, %s, '2017-01-01', '2017-01-01', "
            "ST_GeomFromText(%s, 4326))",
            (zid, zona, comuna.upper(), comuna, zid, f"MULTIPOLYGON((({ring})))"),
        )


def bus_event(conn, eid: int, created: datetime, votes=(IN_1,), updated: datetime | None = None) -> None:
    """A bus event and its votes (one a minute from its creation; the last is the newest)."""
    conn.execute(
        f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
        "busassignment_id) VALUES (%s, %s, %s, 'evn00000', %s, 1)",
        (eid, updated or created, created, PHONE),
    )
    for i, (lon, lat) in enumerate(votes):
        conn.execute(
            f'INSERT INTO "{P}stadisticdatafromregistrationbus" (longitude, latitude, "timeStamp", '
            '"confirmDecline", "phoneId", "reportOfEvent_id") VALUES (%s, %s, %s, \'confirm\', %s, %s)',
            (lon, lat, created + timedelta(minutes=i), PHONE, eid),
        )


def stop_event(conn, eid: int, created: datetime, vote=IN_1) -> None:
    conn.execute(
        f'INSERT INTO "{P}eventforbusstop" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
        "\"stopCode\") VALUES (%s, %s, %s, 'evn00001', %s, 'PA1')",
        (eid, created, created, PHONE),
    )
    conn.execute(
        f'INSERT INTO "{P}stadisticdatafromregistrationbusstop" (longitude, latitude, "timeStamp", '
        '"confirmDecline", "phoneId", "reportOfEvent_id") VALUES (%s, %s, %s, \'confirm\', %s, %s)',
        (*vote, created, PHONE, eid),
    )


def report(conn, rid: int, info, when: datetime = at("2026-11-25T15:00:00+00:00"), phone=PHONE) -> None:
    text = info if isinstance(info, str) else json.dumps(info)
    conn.execute(
        f'INSERT INTO "{P}report" (id, "timeStamp", message, "reportInfo", "phoneId") '
        "VALUES (%s, %s, 'm', %s, %s)",
        (rid, when, text, phone),
    )


def trip(conn, tid: int, direction: str, *pose_times: datetime, phone=PHONE) -> None:
    conn.execute(
        f'INSERT INTO "{P}token" (id, token, busassignment_id, direction, color, "phoneId") '
        "VALUES (%s, %s, 1, %s, '#fff', %s)",
        (tid, f"t{tid}", direction, phone),
    )
    for t in pose_times:
        conn.execute(
            f'INSERT INTO "{P}poseintrajectoryoftoken" (longitude, latitude, "timeStamp", '
            "\"inVehicleOrNot\", token_id) VALUES (-70.61, -33.43, %s, 'vehicle', %s)",
            (t, tid),
        )


def derive(dsn: str) -> None:
    run_all(dsn)


def query(dsn: str, sql: str, params=()) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def periods(dsn: str, table: str) -> dict[int, tuple]:
    """id -> (day type, Transantiago period, half-hour period) as TranSappViz's views show them."""
    rows = query(
        dsn,
        f'SELECT e.id, tp.day_type, tp.name, hh.name FROM "{P}{table}" e '
        f'LEFT JOIN "{P}timeperiod" tp ON tp.id = e."timePeriod_id" '
        f'LEFT JOIN "{P}halfhourperiod" hh ON hh.id = e."halfHourPeriod_id" ORDER BY e.id',
    )
    return {r[0]: r[1:] for r in rows}


def report_info(dsn: str) -> dict[int, dict]:
    """report id -> its reportinfo row (TranSappViz's columns, the zone's comuna)."""
    with connect(dsn) as conn:
        cur = conn.execute(
            'SELECT ri.report_id, ri."reportType", ri."busUUID", ri.service, ri."registrationPlate", '
            'ri."stopCode", ri.latitude, ri.longitude, ri."userLatitude", ri."userLongitude", '
            f'ri.direction, z.comuna FROM "{P}reportinfo" ri '
            f'LEFT JOIN "{P}zonificationtransantiago" z ON z.id = ri.zonification_id ORDER BY ri.report_id'
        )
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert len({r["report_id"] for r in rows}) == len(rows), "one reportinfo row per report"
    return {r["report_id"]: r for r in rows}


def bus_info(plate: str, *, machine: str | None = None, service: str = "506", user=IN_1) -> dict:
    bus = {"licensePlate": plate, "service": service, "latitude": -33.431, "longitude": -70.611}
    if machine is not None:
        bus["machineId"] = machine
    return {"locationUser": {"latitude": user[1], "longitude": user[0]}, "bus": bus}


def problems(dsn: str, table: str, derivation: str) -> dict[int, str]:
    """source id -> problem that ``derivation`` recorded for rows of ``table``."""
    rows = query(
        dsn,
        "SELECT source_id, problem FROM arb_pp_problem WHERE source_table = %s AND derivation = %s",
        (P + table, derivation),
    )
    return dict(rows)


def zones_of(dsn: str, table: str) -> dict[int, str | None]:
    rows = query(
        dsn,
        f'SELECT e.id, z.comuna FROM "{P}{table}" e '
        f'LEFT JOIN "{P}zonificationtransantiago" z ON z.id = e.zonification_id ORDER BY e.id',
    )
    return dict(rows)


# An event at IN_1; stop A 100 m east of it, stop B 110 m north (at -33.43 a degree of
# longitude is 0.834 of a degree of latitude: in degrees B is nearer).
EAST_100M = (-70.61 + 100 / (111_195 * 0.83459), -33.43)
NORTH_110M = (-70.61, -33.43 + 110 / 111_195)


def seed_stops(conn) -> None:
    conn.execute(
        f'INSERT INTO "{P}gtfs" (id, version, "timeCreation") VALUES '
        "(1, 'v1', '2020-01-01T00:00Z'), (2, 'v2', '2026-06-01T00:00Z')"
    )
    stops = [
        (1, "OLD1", IN_1, 1),  # an old version's stop right at the event
        (2, "PA1", EAST_100M, 2),
        (3, "PA2", NORTH_110M, 2),
        (4, "PA3", IN_2, 2),
    ]
    for sid, code, (lon, lat), gtfs in stops:
        conn.execute(
            f'INSERT INTO "{P}busstop" (id, longitude, latitude, code, name, gtfs_id) '
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (sid, lon, lat, code, code, gtfs),
        )


@pytest.fixture
def city(receiver_db) -> str:
    """A receiver database with the small city of seed_city in it."""
    with connect(receiver_db) as conn:
        seed_city(conn)
    return receiver_db
