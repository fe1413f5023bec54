"""Equivalence with TranSappViz's transform.py: one test per row of docs/transappviz-equivalence.md.

Each test seeds a real receiver (TranSappViz's own tables and columns, migration 0200, on
PostGIS), runs every derivation through the engine and reads what TranSappViz's views read:
its columns and tables. The row's id (P1, L2, ...) starts each test's name; the table says
what the original does on the same input and whether we do the same or differ on purpose.
"""

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


def _seed(conn) -> None:
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
    for zid, zona, comuna, ring in ZONES:
        conn.execute(
            f'INSERT INTO "{P}zonificationtransantiago" (id, area, zona, com, comuna, cartodb_id, '
            "created_at, updated_at, geom) VALUES (%s, 1, %s, %s, %s, %s, '2017-01-01', '2017-01-01', "
            "ST_GeomFromText(%s, 4326))",
            (zid, zona, comuna.upper(), comuna, zid, f"MULTIPOLYGON((({ring})))"),
        )


def _bus_event(conn, eid: int, created: datetime, votes=(IN_1,), updated: datetime | None = None) -> None:
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


def _stop_event(conn, eid: int, created: datetime, vote=IN_1) -> None:
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


def _report(conn, rid: int, info, when: datetime = at("2026-11-25T15:00:00+00:00"), phone=PHONE) -> None:
    text = info if isinstance(info, str) else json.dumps(info)
    conn.execute(
        f'INSERT INTO "{P}report" (id, "timeStamp", message, "reportInfo", "phoneId") '
        "VALUES (%s, %s, 'm', %s, %s)",
        (rid, when, text, phone),
    )


def _trip(conn, tid: int, direction: str, *pose_times: datetime, phone=PHONE) -> None:
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


def _derive(dsn: str) -> None:
    run_all(dsn)


def _query(dsn: str, sql: str, params=()) -> list[tuple]:
    with connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _periods(dsn: str, table: str) -> dict[int, tuple]:
    """id -> (day type, Transantiago period, half-hour period) as TranSappViz's views show them."""
    rows = _query(
        dsn,
        f'SELECT e.id, tp.day_type, tp.name, hh.name FROM "{P}{table}" e '
        f'LEFT JOIN "{P}timeperiod" tp ON tp.id = e."timePeriod_id" '
        f'LEFT JOIN "{P}halfhourperiod" hh ON hh.id = e."halfHourPeriod_id" ORDER BY e.id',
    )
    return {r[0]: r[1:] for r in rows}


def _report_info(dsn: str) -> dict[int, dict]:
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


@pytest.fixture
def city(receiver_db) -> str:
    with connect(receiver_db) as conn:
        _seed(conn)
    return receiver_db


# -- P: periods and day types ------------------------------------------------------------------


def test_P1_period_and_day_type_come_from_local_time_not_utc(city):
    """Friday 23:00 in Santiago is Saturday 02:00 UTC: the original took the UTC weekday
    and time of day for the period (Sábado, Nocturno sábado); TranSappViz's half-hour
    already used local time."""
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-11-28T02:00:00+00:00"))  # Friday 23:00 -03
        _bus_event(conn, 2, at("2026-11-25T12:00:00+00:00"))  # Wednesday 09:00 -03
        _stop_event(conn, 1, at("2026-11-28T02:00:00+00:00"))
    _derive(city)
    want = {
        1: ("Laboral", "Pre nocturno", "23:00 - 23:29"),
        2: ("Laboral", "Transicion punta mañana", "09:00 - 09:29"),
    }
    assert _periods(city, "eventforbusv2") == want
    assert _periods(city, "eventforbusstop") == {1: want[1]}


def test_P2_april_daylight_saving_change(city):
    """Santiago leaves summer time on Sunday 5 April 2026 at 03:00 UTC (00:00 -03 becomes
    23:00 -04): 23:30 UTC is 20:30 on the Saturday before and 19:30 on the Sunday after."""
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-04-04T23:30:00+00:00"))  # Saturday 20:30 -03
        _bus_event(conn, 2, at("2026-04-05T23:30:00+00:00"))  # Sunday 19:30 -04
        _bus_event(conn, 3, at("2026-04-05T02:30:00+00:00"))  # Saturday 23:30 -03, first time
        _bus_event(conn, 4, at("2026-04-05T03:30:00+00:00"))  # Saturday 23:30 -04, again
        _stop_event(conn, 1, at("2026-04-04T23:30:00+00:00"))
        _stop_event(conn, 2, at("2026-04-05T23:30:00+00:00"))
    _derive(city)
    saturday = ("Sábado", "Transicion sábado nocturno", "20:30 - 20:59")
    sunday = ("Domingo", "Tarde domingo", "19:30 - 19:59")
    late = ("Sábado", "Pre nocturno sábado", "23:30 - 23:59")
    assert _periods(city, "eventforbusv2") == {1: saturday, 2: sunday, 3: late, 4: late}
    assert _periods(city, "eventforbusstop") == {1: saturday, 2: sunday}


def test_P3_september_daylight_saving_change(city):
    """Santiago enters summer time on Sunday 6 September 2026 at 04:00 UTC (00:00 -04
    becomes 01:00 -03): 23:30 UTC is 19:30 on the Saturday before and 20:30 on the Sunday after."""
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-09-05T23:30:00+00:00"))  # Saturday 19:30 -04
        _bus_event(conn, 2, at("2026-09-06T23:30:00+00:00"))  # Sunday 20:30 -03
        _bus_event(conn, 3, at("2026-09-06T03:59:59+00:00"))  # Saturday 23:59:59 -04
        _bus_event(conn, 4, at("2026-09-06T04:00:00+00:00"))  # Sunday 01:00:00 -03
        _stop_event(conn, 1, at("2026-09-05T23:30:00+00:00"))
        _stop_event(conn, 2, at("2026-09-06T23:30:00+00:00"))
    _derive(city)
    saturday = ("Sábado", "Tarde sábado", "19:30 - 19:59")
    sunday = ("Domingo", "Tarde domingo", "20:30 - 20:59")
    assert _periods(city, "eventforbusv2") == {
        1: saturday,
        2: sunday,
        3: ("Sábado", "Pre nocturno sábado", "23:30 - 23:59"),
        4: ("Domingo", "Nocturno domingo", "01:00 - 01:29"),
    }
    assert _periods(city, "eventforbusstop") == {1: saturday, 2: sunday}


def test_P4_the_malformed_domingo_row_of_migration_0900(city):
    """0900 writes 'Nocturno domingo' ending '05:29:5905:30:00'; Django's time parser reads
    its leading 05:29:59, so TranSappViz's table holds 01:00:00-05:29:59, and so does ours:
    the Sunday periods meet second to second, and a Sunday night event finds its period."""
    rows = _query(
        city,
        f'SELECT name, initial_time::text, end_time::text FROM "{P}timeperiod" '
        "WHERE day_type = 'Domingo' ORDER BY initial_time",
    )
    assert ("Nocturno domingo", "01:00:00", "05:29:59") in rows
    ends = [datetime.strptime(e, "%H:%M:%S") for _, _, e in rows[:-1]]
    starts = [datetime.strptime(s, "%H:%M:%S") for _, s, _ in rows[1:]]
    assert [s - e for s, e in zip(starts, ends, strict=True)] == [timedelta(seconds=1)] * (len(rows) - 1)
    assert _query(city, f'SELECT count(*) FROM "{P}timeperiod"') == [(29,)]
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-11-29T06:00:00+00:00"))  # Sunday 03:00 -03
        _bus_event(conn, 2, at("2026-11-29T08:29:59+00:00"))  # Sunday 05:29:59
        _bus_event(conn, 3, at("2026-11-29T08:30:00+00:00"))  # Sunday 05:30:00
    _derive(city)
    assert _periods(city, "eventforbusv2") == {
        1: ("Domingo", "Nocturno domingo", "03:00 - 03:29"),
        2: ("Domingo", "Nocturno domingo", "05:00 - 05:29"),
        3: ("Domingo", "Transicion domingo mañana", "05:30 - 05:59"),
    }


def test_P5_a_time_of_day_is_taken_to_the_second(city):
    """The original drops the microseconds before looking up periods that end at :59;
    08:29:59.9 is still Punta mañana, not in the gap before 08:30:00."""
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-11-25T11:29:59.900000+00:00"))  # Wednesday 08:29:59.9 -03
    _derive(city)
    assert _periods(city, "eventforbusv2") == {1: ("Laboral", "Punta mañana", "08:00 - 08:29")}


def test_H1_half_hour_periods_in_local_time(city):
    """The original already took the half-hour in local time (``timezone.localtime``), to
    the second: the same, for both event tables, up to the day's last second."""
    with connect(city) as conn:
        _bus_event(conn, 1, at("2026-11-26T02:59:59.900000+00:00"))  # Wednesday 23:59:59.9 -03
        _bus_event(conn, 2, at("2026-07-01T04:00:00+00:00"))  # Wednesday 00:00 -04 (winter)
        _stop_event(conn, 1, at("2026-11-25T03:30:00+00:00"))  # Wednesday 00:30 -03
    _derive(city)
    half = {k: v[2] for k, v in _periods(city, "eventforbusv2").items()}
    assert half == {1: "23:30 - 23:59", 2: "00:00 - 00:29"}
    assert _periods(city, "eventforbusstop")[1][2] == "00:30 - 00:59"
    assert _query(city, f'SELECT count(*), min(name), max(name) FROM "{P}halfhourperiod"') == [
        (48, "00:00 - 00:29", "23:30 - 23:59")
    ]


# -- L: licence plates ------------------------------------------------------------------------


def test_L1_bus_plates_stay_as_shipped_and_are_checked(city):
    """The original rewrote the replicated ``busv2."registrationPlate"`` in place (ABCD12 ->
    AB CD 12, DUMMYLPT -> No Info.). Here it stays as the sender has it (parity; the next
    load would ship it back), the bus is marked ``transformed`` and a plate in no known
    format is a problem; the formatted plate is served in ``reportinfo`` (R3)."""
    _derive(city)
    rows = _query(city, f'SELECT id, "registrationPlate", transformed FROM "{P}busv2" ORDER BY id')
    assert rows == [
        (1, "DUMMYLPT", True),
        (2, "ABCD12", True),
        (3, "bb1234", True),
        (4, "XYZ", True),
        (5, "dummylpt", True),
    ]
    assert set(_problems(city, "busv2", "bus_plates")) == {4}


# -- R: reportInfo to ReportInfo rows --------------------------------------------------------


def _bus_info(plate: str, *, machine: str | None = None, service: str = "506", user=IN_1) -> dict:
    bus = {"licensePlate": plate, "service": service, "latitude": -33.431, "longitude": -70.611}
    if machine is not None:
        bus["machineId"] = machine
    return {"locationUser": {"latitude": user[1], "longitude": user[0]}, "bus": bus}


def _problems(dsn: str, table: str, derivation: str) -> dict[int, str]:
    """source id -> problem that ``derivation`` recorded for rows of ``table``."""
    rows = _query(
        dsn,
        "SELECT source_id, problem FROM arb_pp_problem WHERE source_table = %s AND derivation = %s",
        (P + table, derivation),
    )
    return dict(rows)


def test_R1_a_bus_report(city):
    """The bus shape: type, service, the bus's coordinates, the user's, the bus by its
    machine id and the plate as the bus's formatted plate; the zone by the user's location."""
    with connect(city) as conn:
        _report(conn, 1, _bus_info("abcd12", machine=str(BUS_UUID), user=IN_2))
    _derive(city)
    assert _report_info(city)[1] == {
        "report_id": 1,
        "reportType": "bus",
        "busUUID": BUS_UUID,
        "service": "506",
        "registrationPlate": "AB CD 12",
        "stopCode": None,
        "latitude": -33.431,
        "longitude": -70.611,
        "userLatitude": IN_2[1],
        "userLongitude": IN_2[0],
        "direction": None,
        "comuna": "Las Condes",
    }


@pytest.mark.parametrize("key", ["bus_stop", "busStop"])
def test_R2_a_bus_stop_report_in_both_shapes(city, key):
    """Clients sent the stop under ``bus_stop`` or ``busStop``: the same row either way.
    A stop report has no plate; TranSappViz's column is NOT NULL and Django wrote ''."""
    info = {
        "locationUser": {"latitude": IN_1[1], "longitude": IN_1[0]},
        key: {"id": "PA433", "name": "Parada 3", "latitude": -33.4305, "longitude": -70.6105},
    }
    with connect(city) as conn:
        _report(conn, 1, info)
    _derive(city)
    assert _report_info(city)[1] == {
        "report_id": 1,
        "reportType": "busStop",
        "busUUID": None,
        "service": None,
        "registrationPlate": "",
        "stopCode": "PA433",
        "latitude": -33.4305,
        "longitude": -70.6105,
        "userLatitude": IN_1[1],
        "userLongitude": IN_1[0],
        "direction": None,
        "comuna": "Providencia",
    }


def test_R3_report_plates_in_both_formats_and_dummylpt(city):
    """The report's plate, upper-cased and spaced as XX XX XX (already spaced stays);
    DUMMYLPT is 'No Info.'. Without a machine id, a plate held by exactly one bus finds
    it; 'No Info.' finds no bus (the original matched it against DUMMYLPT buses)."""
    with connect(city) as conn:
        conn.execute(f'DELETE FROM "{P}busv2" WHERE id = 5')  # one DUMMYLPT bus left
        _report(conn, 1, _bus_info("ABCD12"))  # bus 2 by its unique plate
        _report(conn, 2, _bus_info("BB 12 34"))  # bus 3 (bb1234) by its unique plate
        _report(conn, 3, _bus_info("DUMMYLPT"))
        _report(conn, 4, _bus_info("zz9999"))  # a new-format plate no bus has
    _derive(city)
    got = {k: (v["registrationPlate"], v["busUUID"]) for k, v in _report_info(city).items()}
    assert got == {
        1: ("AB CD 12", BUS_UUID),
        2: ("BB 12 34", uuid.UUID(int=3)),
        3: ("No Info.", None),
        4: ("ZZ 99 99", None),
    }


def test_R4_bad_reportinfo_is_a_problem_and_the_other_reports_still_get_their_row(city):
    """The original's json.loads raised out of the whole run; a report with neither bus
    nor stop got no row. Here neither gets a row, both get a problem, the rest is derived."""
    with connect(city) as conn:
        _report(conn, 1, "{broken")
        _report(conn, 2, {"locationUser": {"latitude": IN_1[1], "longitude": IN_1[0]}})
        _report(conn, 3, _bus_info("ABCD12", machine=str(BUS_UUID)))
    _derive(city)
    assert set(_report_info(city)) == {3}
    problems = _problems(city, "report", "report_info")
    assert set(problems) == {1, 2} and "JSON" in problems[1]


def test_R5_user_coordinates_as_numbers(city):
    """The original read ``float(value[2:])``: a number (what the clients' reportInfo
    holds, docs/transappviz-equivalence.md, open question R5) gave NULL there; we keep it."""
    with connect(city) as conn:
        _report(conn, 1, _bus_info("ABCD12", machine=str(BUS_UUID), user=IN_1))
    _derive(city)
    row = _report_info(city)[1]
    assert (row["userLatitude"], row["userLongitude"], row["comuna"]) == (IN_1[1], IN_1[0], "Providencia")


def test_R6_a_service_longer_than_five_characters(city):
    """The original wrote '-' for a service longer than 5 characters; we keep the service
    as sent, which TranSappViz's varchar(11) holds (open question R6: this pins ours)."""
    with connect(city) as conn:
        _report(conn, 1, _bus_info("ABCD12", machine=str(BUS_UUID), service="506e"))
        _report(conn, 2, _bus_info("ABCD12", machine=str(BUS_UUID), service="I09-LONG"))
    _derive(city)
    got = {k: v["service"] for k, v in _report_info(city).items()}
    assert got == {1: "506e", 2: "I09-LONG"}


def test_R7_the_plate_of_a_report_whose_bus_is_known(city):
    """When the bus is found, the original showed the bus's (formatted) plate whatever the
    report said; we show the report's formatted plate and the bus's only when the report
    has none in a known format (open question R7: this pins ours)."""
    with connect(city) as conn:
        _report(conn, 1, _bus_info("DUMMYLPT", machine=str(BUS_UUID)))
        _report(conn, 2, _bus_info("zz9999", machine=str(BUS_UUID)))
        _report(conn, 3, _bus_info("XYZ", machine=str(BUS_UUID)))
    _derive(city)
    got = {k: (v["registrationPlate"], v["busUUID"]) for k, v in _report_info(city).items()}
    assert got == {1: ("No Info.", BUS_UUID), 2: ("ZZ 99 99", BUS_UUID), 3: ("AB CD 12", BUS_UUID)}


# -- Z: zones ------------------------------------------------------------------------------


def _zones(dsn: str, table: str) -> dict[int, str | None]:
    rows = _query(
        dsn,
        f'SELECT e.id, z.comuna FROM "{P}{table}" e '
        f'LEFT JOIN "{P}zonificationtransantiago" z ON z.id = e.zonification_id ORDER BY e.id',
    )
    return dict(rows)


def test_Z1_zone_of_the_newest_vote_point_in_polygon(city):
    """An event's zone is where its newest vote was (PostGIS intersects: a point on a
    boundary belongs to the zone; on the edge two zones share, the smaller id); a point
    in no zone leaves it NULL and records the problem."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        _bus_event(conn, 1, t, votes=[IN_1, IN_2])  # moved: newest vote in zone 2
        _bus_event(conn, 2, t, votes=[(-70.60, -33.43)])  # on the shared edge
        _bus_event(conn, 3, t, votes=[NOWHERE])
        _bus_event(conn, 4, t, votes=[(-70.62, -33.44)])  # a corner of zone 1 only
        _stop_event(conn, 1, t, vote=IN_2)
        _stop_event(conn, 2, t, vote=NOWHERE)
    _derive(city)
    assert _zones(city, "eventforbusv2") == {1: "Las Condes", 2: "Providencia", 3: None, 4: "Providencia"}
    assert _zones(city, "eventforbusstop") == {1: "Las Condes", 2: None}
    assert set(_problems(city, "eventforbusv2", "zones")) == {3}
    assert set(_problems(city, "eventforbusstop", "zones")) == {2}


def test_Z2_a_later_vote_moves_the_event_to_its_new_zone(city):
    """The original set ``transformed`` and never looked at the row again; a vote that
    arrives later (a load changes the event) recomputes its zone here."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        _bus_event(conn, 1, t, votes=[IN_1])
    _derive(city)
    assert _zones(city, "eventforbusv2") == {1: "Providencia"}
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
    _derive(city)
    assert _zones(city, "eventforbusv2") == {1: "Las Condes"}
    assert _query(city, f'SELECT transformed FROM "{P}eventforbusv2"') == [(True,)]


# -- N: nearest stops ----------------------------------------------------------------------

# An event at IN_1; stop A 100 m east of it, stop B 110 m north (at -33.43 a degree of
# longitude is 0.834 of a degree of latitude: in degrees B is nearer).
_EAST_100M = (-70.61 + 100 / (111_195 * 0.83459), -33.43)
_NORTH_110M = (-70.61, -33.43 + 110 / 111_195)


def _stops(conn) -> None:
    conn.execute(
        f'INSERT INTO "{P}gtfs" (id, version, "timeCreation") VALUES '
        "(1, 'v1', '2020-01-01T00:00Z'), (2, 'v2', '2026-06-01T00:00Z')"
    )
    stops = [
        (1, "OLD1", IN_1, 1),  # an old version's stop right at the event
        (2, "PA1", _EAST_100M, 2),
        (3, "PA2", _NORTH_110M, 2),
        (4, "PA3", IN_2, 2),
    ]
    for sid, code, (lon, lat), gtfs in stops:
        conn.execute(
            f'INSERT INTO "{P}busstop" (id, longitude, latitude, code, name, gtfs_id) '
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (sid, lon, lat, code, code, gtfs),
        )


def test_N1_the_two_nearest_stops_in_metres_of_the_gtfs_version_in_force(city):
    """The original (broken at HEAD) ranked every stop of every GTFS version by distance
    in degrees; here the stops of the version in force when the event was created, by
    distance on the ground."""
    with connect(city) as conn:
        _stops(conn)
        _bus_event(conn, 1, at("2026-11-25T15:00:00+00:00"), votes=[IN_1])
    _derive(city)
    assert _query(city, f'SELECT "busStop1", "busStop2" FROM "{P}eventforbusv2"') == [("PA1", "PA2")]


def test_N2_busstop_point_as_transappviz_writes_it(city):
    """TranSappViz's transform writes ``point`` as Point(longitude, latitude) with the
    field's SRID 32140 (no reprojection): the same values here."""
    with connect(city) as conn:
        _stops(conn)
        _stop_event(conn, 1, at("2026-11-25T15:00:00+00:00"))
        _bus_event(conn, 1, at("2026-11-25T15:00:00+00:00"), votes=[IN_1])
    _derive(city)
    rows = _query(
        city,
        f'SELECT code, ST_X(point), ST_Y(point), ST_SRID(point) FROM "{P}busstop" '
        "WHERE point IS NOT NULL ORDER BY id",
    )
    assert "PA1" in [r[0] for r in rows], "the stop of a bus-stop event has its point"
    for code, x, y, srid in rows:
        lon, lat = {"OLD1": IN_1, "PA1": _EAST_100M, "PA2": _NORTH_110M, "PA3": IN_2}[code]
        assert (x, y, srid) == pytest.approx((lon, lat, 32140)), code


# -- D: direction --------------------------------------------------------------------------


def test_D1_direction_from_the_phone_s_latest_trip(city):
    """The direction of the token of the same phone's latest pose at or before the event;
    for bus reports, at or before the report. Here the event's creation counts and a pose
    more than ARB_DIRECTION_MAX_GAP_MINUTES (60) older says nothing; the original compared
    the event's last update and had no limit (open question D1)."""
    t = at("2026-11-25T15:00:00+00:00")
    other = uuid.UUID(int=78)
    with connect(city) as conn:
        _trip(conn, 1, "I", t - timedelta(minutes=10))
        _trip(conn, 2, "R", t + timedelta(minutes=10))
        _trip(conn, 3, "R", t - timedelta(hours=2), phone=other)
        _bus_event(conn, 1, t, votes=[IN_1], updated=t + timedelta(minutes=20))
        _report(conn, 1, _bus_info("ABCD12", machine=str(BUS_UUID)), when=t)
        _report(conn, 2, _bus_info("ABCD12", machine=str(BUS_UUID)), when=t, phone=other)
        conn.execute(
            f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
            "busassignment_id) VALUES (2, %s, %s, 'evn00000', %s, 1)",
            (t, t, other),
        )
    _derive(city)
    assert _query(city, f'SELECT id, direction FROM "{P}eventforbusv2" ORDER BY id') == [(1, "I"), (2, None)]
    assert {k: v["direction"] for k, v in _report_info(city).items()} == {1: "I", 2: None}


# -- T: the transformed marker ---------------------------------------------------------------


def test_T1_rows_are_marked_transformed(city):
    """TranSappViz's own marker: a row every derivation has passed reads ``transformed``
    (its transform.py, if still run, skips it); a row a load changes is recomputed."""
    t = at("2026-11-25T15:00:00+00:00")
    with connect(city) as conn:
        _bus_event(conn, 1, t)
        _stop_event(conn, 1, t)
        _report(conn, 1, _bus_info("ABCD12", machine=str(BUS_UUID)))
    _derive(city)
    for table in ("eventforbusv2", "eventforbusstop", "report"):
        assert _query(city, f'SELECT bool_and(transformed) FROM "{P}{table}"') == [(True,)], table
    assert _query(city, f'SELECT bool_and(transformed) FROM "{P}reportinfo"') == [(True,)]


def test_T2_every_row_a_load_brings_is_derived_whatever_its_time_stamp(city):
    """The original looked only at rows whose ``timeStamp`` fell in the minutes before the
    backup's file name; a row a later load brings with an old ``timeStamp`` is derived here
    (an incremental run: the first one has run already)."""
    _derive(city)
    with connect(city) as conn:
        _bus_event(conn, 1, at("2025-11-26T12:00:00+00:00"))  # a year old: Wednesday 09:00 -03
    _derive(city)
    assert _periods(city, "eventforbusv2") == {1: ("Laboral", "Transicion punta mañana", "09:00 - 09:29")}
    assert _query(city, f'SELECT transformed FROM "{P}eventforbusv2"') == [(True,)]
