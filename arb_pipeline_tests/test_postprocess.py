"""Postprocessing derivations on hand-made inputs, then incremental runs on a real receiver."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from arb_pipeline.errors import ConfigError
from arb_pipeline.pg.connect import connect
from arb_pipeline.postprocess import Scope, all_derivations, covering_derivations, run_all, run_derivation
from arb_pipeline.postprocess.direction import BusEventDirection, latest_trip
from arb_pipeline.postprocess.nearest import NearestStops
from arb_pipeline.postprocess.periods import Periods, assign, local_timezone
from arb_pipeline.postprocess.plates import normalize
from arb_pipeline.postprocess.reportinfo import info_rows, parse, parse_reports
from arb_pipeline.postprocess.zones import Zones
from arb_pipeline_tests.support.dagster_cli import materialize
from arb_pipeline_tests.support.postprocess import assert_every_row_derived, insert_zone, seed_grid_zones

UTC = timezone.utc
P = "AndroidRequests_"
SANTIAGO = local_timezone("America/Santiago")


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


# -- time periods ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_periods(pg_cluster):
    """TranSappViz's periods as receiver migration 0200 writes them (read from the migrated template)."""
    with connect(pg_cluster.dsn("template_receiver")) as conn:
        periods = Periods.load(conn)
        names = dict(
            conn.execute("SELECT id, day_type || '/' || name FROM \"AndroidRequests_timeperiod\"").fetchall()
        )
        halves = dict(conn.execute('SELECT id, name FROM "AndroidRequests_halfhourperiod"').fetchall())
    return periods, names, halves


def test_the_reference_periods_tile_every_day_type_and_every_half_hour(reference_periods):
    periods, _, halves = reference_periods
    second = 1_000_000
    for day_type, (_, starts, ends) in periods.by_day_type.items():
        assert starts[0] == 0 and ends[-1] == 86_400 * second - second, day_type
        assert (starts[1:] == ends[:-1] + second).all(), (
            f"{day_type} periods must meet without gap or overlap"
        )
    assert len(halves) == 48 and (periods.half_hour_ids >= 0).all()
    assert sorted(halves.values())[0] == "00:00 - 00:29" and sorted(halves.values())[-1] == "23:30 - 23:59"


@pytest.mark.parametrize(
    "instant, day_type, period, half_hour",
    [
        (
            "2026-11-25T12:00:00+00:00",
            "Laboral",
            "Laboral/Transicion punta mañana",
            "09:00 - 09:29",
        ),  # Wed 09:00
        # 08:29:59.999999 is 08:29:59 to the second, as TranSappViz's transform takes it
        ("2026-11-25T11:29:59.999999+00:00", "Laboral", "Laboral/Punta mañana", "08:00 - 08:29"),
        ("2026-11-25T11:30:00+00:00", "Laboral", "Laboral/Transicion punta mañana", "08:30 - 08:59"),
        ("2026-11-28T15:00:00+00:00", "Sábado", "Sábado/Mañana sábado", "12:00 - 12:29"),  # Saturday noon
        ("2026-11-29T23:00:00+00:00", "Domingo", "Domingo/Tarde domingo", "20:00 - 20:29"),  # Sunday 20:00
        (
            "2026-11-30T02:59:00+00:00",
            "Domingo",
            "Domingo/Pre nocturno domingo",
            "23:30 - 23:59",
        ),  # still Sunday
        # Daylight saving ends 2026-04-05 at 00:00 (-03) -> 23:00 (-04): the Saturday lasts an hour more.
        ("2026-04-05T02:59:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30 - 23:59"),  # 23:59 -03
        ("2026-04-05T03:30:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30 - 23:59"),  # 23:30 -04
        (
            "2026-04-05T04:30:00+00:00",
            "Domingo",
            "Domingo/Pre nocturno domingo",
            "00:30 - 00:59",
        ),  # 00:30 -04
        # Daylight saving starts 2026-09-06 at 00:00 (-04) -> 01:00 (-03): midnight never happens.
        ("2026-09-06T03:59:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30 - 23:59"),  # 23:59 -04
        ("2026-09-06T04:00:00+00:00", "Domingo", "Domingo/Nocturno domingo", "01:00 - 01:29"),  # 01:00 -03
    ],
)
def test_time_periods_from_local_time_across_daylight_saving(
    reference_periods, instant, day_type, period, half_hour
):
    periods, names, halves = reference_periods
    out = assign(pd.Series([_us(instant)]), periods, SANTIAGO).iloc[0]
    expected_local = datetime.fromisoformat(instant).astimezone(SANTIAGO).replace(tzinfo=None)
    assert out["local_time_creation"] == pd.Timestamp(expected_local)
    assert out["day_type"] == day_type
    assert names[out["time_period_id"]] == period
    assert halves[out["half_hour_period_id"]] == half_hour
    assert pd.isna(out["problem"])


def test_the_time_zone_is_a_setting(reference_periods, monkeypatch):
    periods, names, _ = reference_periods
    monkeypatch.setenv("ARB_LOCAL_TIMEZONE", "UTC")
    out = assign(pd.Series([_us("2026-11-28T15:00:00+00:00")]), periods, local_timezone()).iloc[0]
    assert out["day_type"] == "Sábado" and names[out["time_period_id"]] == "Sábado/Punta mediodia sábado"
    monkeypatch.setenv("ARB_LOCAL_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigError, match="ARB_LOCAL_TIMEZONE='Mars/Olympus'"):
        local_timezone()


def test_a_time_no_period_holds_is_a_problem_not_a_failure():
    from datetime import time

    gap = Periods.from_rows(
        [(1, "Laboral", time(0), time(11, 59, 59))],
        [(i + 1, time(i // 2, 30 * (i % 2)), None) for i in range(48)],
    )
    out = assign(
        pd.Series([_us("2026-11-25T12:00:00+00:00"), _us("2026-11-25T16:00:00+00:00")]), gap, SANTIAGO
    )
    assert out["time_period_id"].iloc[0] == 1 and out["problem"].iloc[0] is None
    assert pd.isna(out["time_period_id"].iloc[1])
    assert out["problem"].iloc[1] == "no Laboral time period holds local time 13:00:00"


# -- plates ------------------------------------------------------------------------------------


def test_every_plate_format():
    raw = pd.Series(["DUMMYLPT", "ABCD12", "BB1234", "bb-12 34", "dummylpt", "AB123", "ABC123", "", None])
    out = normalize(raw)
    assert out["normalized_plate"].tolist() == [
        "No Info.",
        "AB CD 12",
        "BB 12 34",
        "BB 12 34",
        "No Info.",
        None,
        None,
        None,
        None,
    ]
    assert out["plate_format"].tolist() == [
        "DUMMYLPT",
        "AAAA11",
        "BB1234",
        "BB1234",
        "DUMMYLPT",
        None,
        None,
        None,
        None,
    ]
    assert out["problem"].tolist()[:5] == [None] * 5
    assert out["problem"][5] == "plate 'AB123' matches no known format (AAAA11, BB1234, DUMMYLPT)"
    assert "'ABC123'" in out["problem"][6]
    assert out["problem"][7] == out["problem"][8] == "no plate"


# -- reportInfo --------------------------------------------------------------------------------

BUS_UUID = "0b6f4b07-7cbb-4c43-9c4e-0d8fbb5e0c11"
USER = {"latitude": -33.45, "longitude": -70.66}


def test_report_info_with_bus_bus_stop_and_busStop():
    bus = parse(
        json.dumps(
            {
                "locationUser": USER,
                "bus": {
                    "licensePlate": "BBBB12",
                    "machineId": BUS_UUID,
                    "service": "506",
                    "latitude": -33.451,
                    "longitude": "-70.661",
                },
            }
        )
    )
    assert bus == {
        **bus,
        "report_type": "bus",
        "plate_raw": "BBBB12",
        "machine_id": BUS_UUID,
        "service": "506",
        "latitude": -33.451,
        "longitude": -70.661,
        "user_latitude": -33.45,
        "user_longitude": -70.66,
        "problem": None,
    }
    for key in ("bus_stop", "busStop"):
        stop = parse(
            json.dumps(
                {
                    "locationUser": USER,
                    key: {"id": "PA443", "name": "Parada 3", "latitude": -33.44, "longitude": -70.65},
                }
            )
        )
        assert (
            stop["report_type"],
            stop["stop_code"],
            stop["latitude"],
            stop["longitude"],
            stop["problem"],
        ) == ("busStop", "PA443", -33.44, -70.65, None)
        assert stop["plate"] is None and stop["bus_uuid"] is None


@pytest.mark.parametrize(
    "text, problem",
    [
        ('{"locationUser": {"latitude": -33.4, ', "reportInfo is not JSON (Expecting property name"),
        ("[1, 2]", "reportInfo is not a JSON object"),
        (None, "reportInfo is not a JSON object"),
        ('{"locationUser": {"latitude": -33.4, "longitude": -70.6}}', "neither bus nor bus_stop/busStop"),
        (
            '{"locationUser": {"latitude": "north", "longitude": -70.6}, "busStop": {"id": "PA1", '
            '"latitude": -33.4, "longitude": -70.6}}',
            "user coordinates are not numbers in range: latitude='north'",
        ),
        (
            '{"bus": {}, "busStop": {"id": "PA1"}, "locationUser": {"latitude": 1, "longitude": 2}}',
            "both bus and busStop",
        ),
    ],
)
def test_malformed_report_info_is_a_problem_of_its_row(text, problem):
    assert problem in parse(text)["problem"]


def test_the_bus_of_a_report_by_machine_id_or_unique_plate():
    buses = pd.DataFrame(
        {
            "uuid": [BUS_UUID, str(uuid.UUID(int=2)), str(uuid.UUID(int=3)), str(uuid.UUID(int=4))],
            "registrationPlate": ["ZZZZ99", "CD1234", "GHJK55", "ghjk55"],
        }
    )

    def bus(plate, machine):
        return json.dumps(
            {
                "locationUser": USER,
                "bus": {
                    "licensePlate": plate,
                    "machineId": machine,
                    "service": "506",
                    "latitude": -33.4,
                    "longitude": -70.6,
                },
            }
        )

    texts = pd.Series(
        [
            bus("ZZZZ99", BUS_UUID),
            bus("cd-12-34", "not-a-uuid"),
            bus("GHJK55", "x"),
            bus("QQ", str(uuid.UUID(int=9))),
            "{oops",
        ]
    )
    out = parse_reports(texts, buses)
    assert out["bus_uuid"].tolist()[:2] == [BUS_UUID, str(uuid.UUID(int=2))]  # machine id; unique plate
    assert out["plate"].tolist()[:3] == ["ZZ ZZ 99", "CD 12 34", "GH JK 55"]
    assert (
        out["bus_uuid"][2] is None and "nor a unique plate 'GHJK55'" in out["problem"][2]
    )  # two buses have it
    assert (
        "plate 'QQ' matches no known format" in out["problem"][3]
        and "no bus with machine id" in out["problem"][3]
    )
    assert out["problem"][4].startswith("reportInfo is not JSON") and out["bus_uuid"][4] is None


def test_report_info_rows_as_transappviz_stores_them():
    buses = pd.DataFrame({"uuid": [BUS_UUID], "registrationPlate": ["ZZZZ99"]})

    def bus(plate, machine="", service="506"):
        return {
            "licensePlate": plate,
            "machineId": machine,
            "service": service,
            "latitude": -33.4,
            "longitude": -70.6,
        }

    texts = pd.Series(
        [
            json.dumps({"locationUser": USER, "bus": bus("bb-12-34")}),
            json.dumps({"locationUser": USER, "bus": bus("DUMMYLPT")}),
            json.dumps({"locationUser": USER, "bus": bus("QQ", BUS_UUID)}),  # plate of its bus
            json.dumps({"locationUser": USER, "bus": bus("QQ", service="a-very-long-service")}),
            json.dumps(
                {"locationUser": USER, "busStop": {"id": "PA443", "latitude": -33.4, "longitude": -70.6}}
            ),
            json.dumps(
                {"locationUser": USER, "bus_stop": {"id": "PA443", "latitude": "x", "longitude": -70.6}}
            ),
            "{oops",
        ]
    )
    out = info_rows(texts, buses)
    assert out["reportType"].tolist() == ["bus", "bus", "bus", "bus", "busStop", None, None]  # None: no row
    assert out["registrationPlate"].tolist() == ["BB 12 34", "No Info.", "ZZ ZZ 99", "", "", "", ""]
    assert out["busUUID"][2] == BUS_UUID and out["service"][3] is None
    assert "service 'a-very-long-service' is longer than 11 characters" in out["problem"][3]
    assert out["stopCode"][4] == "PA443" and out["problem"][4] is None
    assert "bus stop coordinates are not numbers" in out["problem"][5]
    assert (out["userLatitude"][0], out["userLongitude"][0]) == (-33.45, -70.66)


# -- zones and nearest stops, in PostGIS ------------------------------------------------------------

PHONE = uuid.UUID(int=77)
T0 = datetime(2026, 11, 7, 15, 0, tzinfo=UTC)  # a Saturday, 12:00 in Santiago (a closed partition)


def _bus_events(conn, points, created=None) -> list[int]:
    """Bus events (ids from 1) with one vote each at ``points`` ((lon, lat) or None: no vote)."""
    conn.execute(
        f'INSERT INTO "{P}event" (id, name, category, origin, "eventType") VALUES '
        "('evn00000', 'x', 'c', 'i', 'bus') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        f'INSERT INTO "{P}busv2" (id, "registrationPlate", uuid) VALUES (99, \'ABCD12\', %s) '
        "ON CONFLICT DO NOTHING",
        (uuid.UUID(int=99),),
    )
    conn.execute(
        f"INSERT INTO \"{P}busassignment\" (id, service, uuid_id) VALUES (99, '506', 99) "
        "ON CONFLICT DO NOTHING"
    )
    ids = list(range(1, len(points) + 1))
    with conn.cursor() as cur:
        cur.executemany(
            f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
            "busassignment_id) VALUES (%s, %s, %s, 'evn00000', %s, 99)",
            [(i, T0, created[i - 1] if created is not None else T0, PHONE) for i in ids],
        )
        cur.executemany(
            f'INSERT INTO "{P}stadisticdatafromregistrationbus" (longitude, latitude, "timeStamp", '
            '"confirmDecline", "phoneId", "reportOfEvent_id") VALUES (%s, %s, %s, \'confirm\', %s, %s)',
            [(p[0], p[1], T0, PHONE, i) for i, p in zip(ids, points, strict=True) if p is not None],
        )
    return ids


def _problems(dsn, derivation):
    with connect(dsn) as conn:
        return dict(
            conn.execute(
                "SELECT source_id, problem FROM arb_pp_problem WHERE derivation = %s", (derivation,)
            ).fetchall()
        )


def test_zones_on_boundaries_and_outside_in_postgis(receiver_db):
    square = "POLYGON(({a} 0, {b} 0, {b} 1, {a} 1, {a} 0))"
    lon = [0.5, 1.0, 1.0, 0.0, 1.5, 3.0, None, 2.0]
    lat = [0.5, 0.5, 1.0, 0.5, 0.2, 3.0, None, 0.0]
    with connect(receiver_db) as conn:
        insert_zone(conn, 5, "Cinco", square.format(a=0, b=1))
        insert_zone(conn, 3, "Tres", square.format(a=1, b=2))
        insert_zone(conn, 7, "Siete", "MULTIPOLYGON(((10 10, 11 10, 11 11, 10 11, 10 10)))")
        _bus_events(conn, [None if x is None else (x, y) for x, y in zip(lon, lat, strict=True)])
    assert run_derivation(receiver_db, Zones()).problems == 2
    got = _rows(receiver_db, f'"{P}eventforbusv2"', "id, zonification_id")
    # inside; shared edge -> smaller id; shared corner; outer edge; inside; outside; no vote; outer corner
    assert [got[i]["zonification_id"] for i in range(1, 9)] == [5, 3, 3, 5, 3, None, None, 3]
    assert _problems(receiver_db, "zones") == {
        6: "(3, 3) lies in no zone",
        7: "the event has no vote with coordinates",
    }


def _haversine(lon1, lat1, lon2, lat2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(a))


def test_nearest_two_stops_by_knn_match_brute_force(receiver_db):
    rng = np.random.default_rng(7)
    v1_from, v2_from = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    stops = []
    for gtfs_id, n in ((1, 400), (2, 300)):
        lon, lat = rng.uniform(-70.85, -70.45, n), rng.uniform(-33.65, -33.30, n)
        stops += [
            (gtfs_id, f"P{gtfs_id}{i:04d}", x, y) for i, (x, y) in enumerate(zip(lon, lat, strict=True))
        ]
    m = 600
    lon, lat = rng.uniform(-70.9, -70.4, m), rng.uniform(-33.7, -33.25, m)
    created = [
        [v2_from - timedelta(seconds=1), v2_from, datetime(2020, 1, 1, tzinfo=UTC)][i % 3] for i in range(m)
    ]
    with connect(receiver_db) as conn:
        conn.execute(
            f"INSERT INTO \"{P}gtfs\" (id, version, \"timeCreation\") VALUES (1, 'v1', %s), (2, 'v2', %s)",
            (v1_from, v2_from),
        )
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{P}busstop" (gtfs_id, code, longitude, latitude, name) '
                "VALUES (%s, %s, %s, %s, 's')",
                stops,
            )
        ids = _bus_events(conn, list(zip(lon, lat, strict=True)) + [None], created + [v2_from])
    result = run_derivation(receiver_db, NearestStops())
    assert result.computed == len(ids) and result.problems == 1
    got = _rows(receiver_db, f'"{P}eventforbusv2"', 'id, "busStop1", "busStop2"')
    frame = pd.DataFrame(stops, columns=["gtfs", "code", "lon", "lat"])
    for i in range(m):
        version = 2 if created[i] >= v2_from else 1  # before every version: the oldest
        mine = frame[frame["gtfs"] == version]
        d = _haversine(lon[i], lat[i], mine["lon"].to_numpy(), mine["lat"].to_numpy())
        best = mine["code"].to_numpy()[np.argsort(d, kind="stable")[:2]].tolist()
        assert [got[i + 1]["busStop1"], got[i + 1]["busStop2"]] == best, i
    assert got[m + 1]["busStop1"] is None
    assert _problems(receiver_db, "bus_event_nearest_stops") == {
        m + 1: "the event has no vote with coordinates"
    }
    with connect(receiver_db) as conn:  # TranSappViz's point of every stop: its lon/lat, SRID 32140
        assert conn.execute(
            f'SELECT count(*) FROM "{P}busstop" WHERE transformed AND ST_SRID(point) = 32140 '
            "AND ST_X(point) = longitude AND ST_Y(point) = latitude"
        ).fetchone()[0] == len(stops)


# -- direction ---------------------------------------------------------------------------------


def test_direction_from_the_phone_s_latest_trip_before_the_event():
    minute = 60_000_000
    poses = pd.DataFrame(
        {
            "phone": ["A", "A", "A", "B"],
            "pose_us": [100 * minute, 180 * minute, 180 * minute, 150 * minute],
            "token_id": [1, 2, 3, 4],
            "direction": ["I", "R", "I ", None],
        }
    )
    events = pd.DataFrame(
        {
            "phone": ["A", "A", "A", "A", "B", "C", "A"],
            "created_us": [
                150 * minute,
                179 * minute,
                180 * minute,
                50 * minute,
                160 * minute,
                160 * minute,
                301 * minute,
            ],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    out = latest_trip(events, poses, 120 * minute)
    assert out.index.tolist() == [10, 11, 12, 13, 14, 15, 16]
    # A pose at the event's time counts; two tokens with a pose then: the larger token id.
    assert out["token_id"].tolist()[:3] == [1, 1, 3] and out["direction"].tolist()[:3] == ["I", "I", "I"]
    # Before any trip; B's token has no direction; C has no trip; 121 minutes is too long ago.
    assert out["direction"].tolist()[3:] == [None, None, None, None]
    assert out["token_id"][14] == 4 and pd.isna(out["token_id"][13]) and pd.isna(out["token_id"][16])


@pytest.mark.parametrize("lookup_rows", [0, 10_000], ids=["as-of-join", "per-event-lookup"])
def test_direction_by_as_of_join_and_by_lookup_agree(receiver_db, monkeypatch, lookup_rows):
    """Big batches pair events with poses in pandas, small ones look each up in SQL: the
    same cases as above give the same directions either way."""
    from arb_pipeline.postprocess import direction

    monkeypatch.setattr(direction, "LOOKUP_ROWS", lookup_rows)
    at = T0 - timedelta(hours=3)
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
        phone_b = uuid.UUID(int=79)
        for token, phone, d in ((1, PHONE, "I"), (2, PHONE, "R"), (3, PHONE, "I "), (4, phone_b, None)):
            conn.execute(
                f'INSERT INTO "{P}token" (id, token, busassignment_id, direction, color, "phoneId") '
                "VALUES (%s, 't', 1, %s, '#fff', %s)",
                (token, d, phone),
            )
        for token, minute in ((1, 100), (2, 180), (3, 180), (4, 150)):
            conn.execute(
                f'INSERT INTO "{P}poseintrajectoryoftoken" (longitude, latitude, "timeStamp", '
                "\"inVehicleOrNot\", token_id) VALUES (-70.6, -33.4, %s, 'vehicle', %s)",
                (at + timedelta(minutes=minute), token),
            )
        cases = [
            (PHONE, 150),
            (PHONE, 179),
            (PHONE, 180),
            (PHONE, 50),
            (phone_b, 160),
            (uuid.UUID(int=78), 160),
        ]
        conn.execute(f'DELETE FROM "{P}stadisticdatafromregistrationbus"')
        conn.execute(f'DELETE FROM "{P}eventforbusv2"')
        for i, (phone, minute) in enumerate(cases, start=10):
            conn.execute(
                f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
                f"busassignment_id) VALUES (%s, %s, %s, 'evn00000', %s, 1)",
                (i, at, at + timedelta(minutes=minute), phone),
            )
    run_derivation(receiver_db, BusEventDirection(120))
    got = _rows(receiver_db, f'"{P}eventforbusv2"', "id, direction")
    # A pose at the event's time counts; two tokens with a pose then: the larger one's
    # (its direction trimmed); before any trip, B's token without one, C without a trip: none.
    assert [got[i]["direction"] for i in range(10, 16)] == ["I", "I", "I", None, None, None]


# -- incremental runs on a real receiver ---------------------------------------------------------


def _seed_receiver(conn):
    conn.execute(f"INSERT INTO \"{P}gtfs\" (id, version, \"timeCreation\") VALUES (1, 'v1', '2020-01-01')")
    conn.execute(
        f'INSERT INTO "{P}busstop" (id, longitude, latitude, code, name, gtfs_id) VALUES '
        "(1, -70.60, -33.40, 'PA1', 'a', 1), (2, -70.61, -33.40, 'PA2', 'b', 1), "
        "(3, -70.80, -33.60, 'PA3', 'c', 1)"
    )
    conn.execute(
        f'INSERT INTO "{P}event" (id, name, category, origin, "eventType") VALUES '
        "('evn00000', 'x', 'c', 'i', 'bus'), ('evn00001', 'y', 'c', 'i', 'busStop')"
    )
    conn.execute(
        f'INSERT INTO "{P}busv2" (id, "registrationPlate", uuid) VALUES '
        f"(1, 'DUMMYLPT', '{uuid.UUID(int=1)}'), (2, 'ABCD12', '{uuid.UUID(int=2)}'), "
        f"(3, 'XYZ', '{uuid.UUID(int=3)}')"
    )
    conn.execute(f"INSERT INTO \"{P}busassignment\" (id, service, uuid_id) VALUES (1, '506', 2)")
    for i in (1, 2, 3):
        conn.execute(
            f'INSERT INTO "{P}eventforbusv2" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
            f"busassignment_id) VALUES (%s, %s, %s, 'evn00000', %s, 1)",
            (i, T0, T0, PHONE),
        )
    conn.execute(
        f'INSERT INTO "{P}eventforbusstop" (id, "timeStamp", "timeCreation", event_id, "phoneId", '
        f"\"stopCode\") VALUES (1, %s, %s, 'evn00001', %s, 'PA1')",
        (T0, T0, PHONE),
    )
    stat = (
        'INSERT INTO "{t}" (longitude, latitude, "timeStamp", "confirmDecline", '
        '"phoneId", "reportOfEvent_id") '
        "VALUES (%s, %s, %s, 'confirm', %s, %s)"
    )
    conn.execute(stat.format(t=P + "stadisticdatafromregistrationbus"), (-70.601, -33.40, T0, PHONE, 1))
    conn.execute(
        stat.format(t=P + "stadisticdatafromregistrationbus"), (-71.5, -34.0, T0, PHONE, 2)
    )  # outside
    conn.execute(stat.format(t=P + "stadisticdatafromregistrationbusstop"), (-70.79, -33.59, T0, PHONE, 1))
    info = {
        "locationUser": {"latitude": -33.41, "longitude": -70.61},
        "bus": {
            "licensePlate": "ABCD12",
            "machineId": str(uuid.UUID(int=9)),
            "service": "506",
            "latitude": -33.41,
            "longitude": -70.61,
        },
    }
    conn.execute(
        f'INSERT INTO "{P}report" (id, "timeStamp", message, "reportInfo", "phoneId") VALUES '
        "(1, %s, 'm', %s, %s), (2, %s, 'm', '{broken', %s)",
        (T0, json.dumps(info), PHONE, T0, PHONE),
    )
    seed_grid_zones(conn)


def _rows(dsn, table, columns="*"):
    with connect(dsn) as conn:
        cur = conn.execute(f"SELECT {columns} FROM {table} ORDER BY id")
        return {r[0]: dict(zip([d.name for d in cur.description], r, strict=True)) for r in cur.fetchall()}


def _by_name(results):
    return {r.derivation: r for r in results}


def _zone_at(dsn, lon, lat):
    with connect(dsn) as conn:
        return conn.execute(
            f'SELECT id FROM "{P}zonificationtransantiago" WHERE ST_Intersects(geom, '
            "ST_SetSRID(ST_MakePoint(%s, %s), 4326)) ORDER BY id LIMIT 1",
            (lon, lat),
        ).fetchone()[0]


def _period(dsn, table, event_id):
    with connect(dsn) as conn:
        return conn.execute(
            f'SELECT tp.day_type, tp.name, hh.name FROM "{P}{table}" e '
            f'JOIN "{P}timeperiod" tp ON tp.id = e."timePeriod_id" '
            f'JOIN "{P}halfhourperiod" hh ON hh.id = e."halfHourPeriod_id" WHERE e.id = %s',
            (event_id,),
        ).fetchone()


def test_runs_compute_what_changed_and_record_bad_rows(receiver_db):
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    first = _by_name(run_all(receiver_db))
    assert {r.mode for r in first.values()} == {"full"}
    assert first["zones"].computed == 1 + 3 and first["bus_plates"].computed == 3
    assert first["report_info"].computed == 2
    ev = _rows(receiver_db, f'"{P}eventforbusv2"')
    assert ev[1]["zonification_id"] == _zone_at(receiver_db, -70.601, -33.40)
    assert ev[2]["zonification_id"] is None and ev[3]["zonification_id"] is None
    assert _problems(receiver_db, "zones") == {
        2: "(-71.5, -34) lies in no zone",
        3: "the event has no vote with coordinates",
    }
    assert _period(receiver_db, "eventforbusstop", 1) == ("Sábado", "Mañana sábado", "12:00 - 12:29")
    assert (ev[1]["busStop1"], ev[1]["busStop2"]) == ("PA1", "PA2")
    assert "matches no known format" in _problems(receiver_db, "bus_plates")[3]
    # busv2 stays as shipped (parity); the report's own row holds the formatted plate.
    buses = _rows(receiver_db, f'"{P}busv2"')
    assert [buses[i]["registrationPlate"] for i in (1, 2, 3)] == ["DUMMYLPT", "ABCD12", "XYZ"]
    info = _rows(receiver_db, f'"{P}reportinfo"', "report_id, *")
    assert list(info) == [1]  # report 2's reportInfo is broken: no row, a problem
    assert (
        info[1]["busUUID"] == uuid.UUID(int=2) and info[1]["registrationPlate"] == "AB CD 12"
    )  # unique plate
    assert info[1]["zonification_id"] == _zone_at(receiver_db, -70.61, -33.41) and info[1]["transformed"]
    assert _problems(receiver_db, "report_info")[2].startswith("reportInfo is not JSON")
    assert_every_row_derived(receiver_db)

    # Nothing changed: nothing computed.
    again = _by_name(run_all(receiver_db))
    assert {r.mode for r in again.values()} == {"incremental"} and sum(
        r.computed for r in again.values()
    ) == 0

    # A load changes event 3 (the loader sets arb_changed_at and resets transformed) and a
    # new vote arrives for event 1.
    with connect(receiver_db) as conn:
        conn.execute(
            f'UPDATE "{P}eventforbusv2" SET "timeCreation" = %s, arb_changed_at = clock_timestamp(), '
            "transformed = false WHERE id = 3",
            (T0 + timedelta(days=1),),
        )
        conn.execute(
            f'INSERT INTO "{P}stadisticdatafromregistrationbus" (longitude, latitude, "timeStamp", '
            '"confirmDecline", "phoneId", "reportOfEvent_id") '
            "VALUES (-70.80, -33.60, %s, 'confirm', %s, 1)",
            (T0 + timedelta(minutes=1), PHONE),
        )
    third = _by_name(run_all(receiver_db))
    assert third["event_periods"].computed == 1 and third["zones"].computed == 2
    assert third["bus_event_nearest_stops"].computed == 2 and third["bus_plates"].computed == 0
    after = _rows(receiver_db, f'"{P}eventforbusv2"')
    assert after[1]["zonification_id"] == _zone_at(receiver_db, -70.80, -33.60) != ev[1]["zonification_id"]
    assert after[2] == ev[2]
    assert _period(receiver_db, "eventforbusv2", 3)[0] == "Domingo" and after[3]["transformed"]
    assert after[1]["busStop1"] == "PA3"

    # A trip of the same phone arrives later (with a complete): the events and the bus
    # report get their direction.
    with connect(receiver_db) as conn:
        conn.execute(
            f'INSERT INTO "{P}token" (id, token, busassignment_id, direction, color, "phoneId") '
            "VALUES (1, 't', 1, 'R', '#fff', %s)",
            (PHONE,),
        )
        conn.execute(
            f'INSERT INTO "{P}poseintrajectoryoftoken" (longitude, latitude, "timeStamp", '
            f"\"inVehicleOrNot\", token_id) VALUES (-70.6, -33.4, %s, 'vehicle', 1)",
            (T0 - timedelta(minutes=10),),
        )
    fourth = _by_name(run_all(receiver_db))
    assert fourth["bus_event_direction"].computed == 2  # events 1 and 2 (event 3 is a day later)
    direction = _rows(receiver_db, f'"{P}eventforbusv2"', "id, direction")
    assert [direction[i]["direction"] for i in (1, 2, 3)] == ["R", "R", None]
    assert fourth["report_info"].computed == 2  # the phone's reports
    assert _rows(receiver_db, f'"{P}reportinfo"', "report_id, direction")[1]["direction"] == "R"

    # The report's bus arrives: the report was resolved already, by plate.
    with connect(receiver_db) as conn:
        conn.execute(
            f'INSERT INTO "{P}busv2" (id, "registrationPlate", uuid) VALUES (4, \'ABCD12\', %s)',
            (uuid.UUID(int=9),),
        )
    fifth = _by_name(run_all(receiver_db))
    assert fifth["report_info"].computed == 0
    assert _rows(receiver_db, f'"{P}reportinfo"', "report_id, *")[1]["busUUID"] == uuid.UUID(int=2)

    # A new zoning is reference data: every zone is recomputed; a deleted event takes its problems along.
    with connect(receiver_db) as conn:
        conn.execute(f'UPDATE "{P}eventforbusv2" SET zonification_id = NULL')
        conn.execute(f'UPDATE "{P}eventforbusstop" SET zonification_id = NULL')
        conn.execute(f'UPDATE "{P}reportinfo" SET zonification_id = NULL')
        seed_grid_zones(conn, 2, 2)
        conn.execute(f'DELETE FROM "{P}stadisticdatafromregistrationbus" WHERE "reportOfEvent_id" = 2')
        conn.execute(f'DELETE FROM "{P}eventforbusv2" WHERE id = 2')
    redo = _by_name(run_all(receiver_db))
    assert redo["zones"].mode == "full" and redo["zones"].computed == 1 + 2
    assert redo["report_info"].mode == "full"
    assert _rows(receiver_db, f'"{P}eventforbusv2"')[1]["zonification_id"] == _zone_at(
        receiver_db, -70.80, -33.60
    )
    assert _rows(receiver_db, f'"{P}reportinfo"', "report_id, *")[1]["zonification_id"] is not None
    assert 2 not in _problems(receiver_db, "zones")


def _updates(dsn, table) -> int:
    """Row versions the server counted as updated in ``table`` (sessions flush their counts when they end)."""
    with connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = %s", (table,)
        ).fetchone()[0]


def test_a_table_s_derivations_write_each_row_once(receiver_db):
    """The four derivations of a bus event share one UPDATE: a full run writes each event once,
    ``transformed`` included; run one by one, each rewrites the rows whose values it changes."""
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    tables = {t: _updates(receiver_db, P + t) for t in ("eventforbusv2", "eventforbusstop")}
    run_all(receiver_db)
    assert {t: _updates(receiver_db, P + t) - n for t, n in tables.items()} == {
        "eventforbusv2": 3,
        "eventforbusstop": 1,
    }
    assert_every_row_derived(receiver_db)
    before = _updates(receiver_db, P + "eventforbusv2")
    with connect(receiver_db) as conn:
        conn.execute(f'UPDATE "{P}eventforbusv2" SET "timePeriod_id" = NULL, zonification_id = NULL')
    for d in all_derivations():  # alone, each writes only its own columns
        run_derivation(receiver_db, d, Scope(full=True))
    # The clearing (3), then periods put back all three and zones the one event in a zone.
    assert _updates(receiver_db, P + "eventforbusv2") - before == 3 + 3 + 1


def test_a_window_is_recomputed_on_request(receiver_db):
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    run_all(receiver_db)
    outside = run_all(
        receiver_db, Scope(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), recompute_window=True)
    )
    assert sum(r.computed for r in outside) == 0
    inside = _by_name(run_all(receiver_db, Scope(T0, T0 + timedelta(minutes=5), recompute_window=True)))
    assert (
        inside["event_periods"].computed == 4 and inside["bus_plates"].computed == 1
    )  # the bus of its events
    assert all(r.mode == "full" for r in run_all(receiver_db, Scope(full=True)))


def test_cli_materializes_a_past_partition_by_hand(receiver_db, tmp_path):
    """`dagster asset materialize --select group:receiver_postprocess --partition KEY`
    recomputes that window."""
    import os

    from arb_pipeline.dagster_common.partitions import PARTIAL

    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    run_all(receiver_db)
    with connect(receiver_db) as conn:  # as if someone cleared them: the window's run writes them again
        conn.execute(f'UPDATE "{P}eventforbusv2" SET "timePeriod_id" = NULL, zonification_id = NULL')
    key = PARTIAL.get_partition_key_for_timestamp(T0.timestamp())
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "ARB_RECEIVER_DSN": receiver_db,
        "ARB_INBOX_DIR": str(tmp_path / "inbox"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    materialize("receiver", "receiver_postprocess", key, env)
    after = _rows(receiver_db, f'"{P}eventforbusv2"')
    assert all(after[i]["timePeriod_id"] is not None for i in (1, 2, 3)) and after[1]["zonification_id"]


def test_every_derivation_is_registered_once():
    names = [d.name for d in all_derivations()]
    assert len(names) == len(set(names)) == 6
    assert covering_derivations()[P + "eventforbusstop"] == ("event_periods", "zones")
    assert BusEventDirection(30).reference_digest(None) != BusEventDirection(60).reference_digest(None)
