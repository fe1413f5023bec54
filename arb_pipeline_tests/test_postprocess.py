"""Postprocessing derivations on hand-made inputs, then incremental runs on a real receiver."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from arb_pipeline.errors import ConfigError
from arb_pipeline.ops.zoning import ZONES, bundled_zoning, import_zoning
from arb_pipeline.pg.connect import connect
from arb_pipeline.postprocess import Scope, all_derivations, run_all, run_derivation
from arb_pipeline.postprocess.direction import BusEventDirection, latest_trip
from arb_pipeline.postprocess.nearest import EARTH_RADIUS_M, StopSet
from arb_pipeline.postprocess.periods import Periods, assign, local_timezone
from arb_pipeline.postprocess.plates import normalize
from arb_pipeline.postprocess.reportinfo import parse, parse_reports
from arb_pipeline.postprocess.zones import ZoneIndex, Zones
from arb_pipeline_tests.support.dagster_cli import materialize

UTC = timezone.utc
P = "AndroidRequests_"
SANTIAGO = local_timezone("America/Santiago")


def _us(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1_000_000)


# -- time periods ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_periods(pg_cluster):
    """The periods receiver migration 0007 writes (read from the migrated template)."""
    with connect(pg_cluster.dsn("template_receiver")) as conn:
        periods = Periods.load(conn)
        names = dict(
            conn.execute('SELECT id, "dayType" || \'/\' || name FROM "AndroidRequests_timeperiod"').fetchall()
        )
        halves = dict(conn.execute('SELECT id, name FROM "AndroidRequests_halfhourperiod"').fetchall())
    return periods, names, halves


def test_the_reference_periods_tile_every_day_type_and_every_half_hour(reference_periods):
    periods, _, halves = reference_periods
    for day_type, (_, starts, ends) in periods.by_day_type.items():
        assert starts[0] == 0 and ends[-1] == 86_400_000_000 - 1, day_type
        assert (starts[1:] == ends[:-1] + 1).all(), f"{day_type} periods must meet without gap or overlap"
    assert len(halves) == 48 and (periods.half_hour_ids >= 0).all()
    assert sorted(halves.values())[0] == "00:00-00:30" and sorted(halves.values())[-1] == "23:30-00:00"


@pytest.mark.parametrize(
    "instant, day_type, period, half_hour",
    [
        (
            "2026-11-25T12:00:00+00:00",
            "Laboral",
            "Laboral/Transición punta mañana",
            "09:00-09:30",
        ),  # Wednesday 09:00
        (
            "2026-11-25T11:29:59.999999+00:00",
            "Laboral",
            "Laboral/Punta mañana",
            "08:00-08:30",
        ),  # 08:29:59.999999
        (
            "2026-11-25T11:30:00+00:00",
            "Laboral",
            "Laboral/Transición punta mañana",
            "08:30-09:00",
        ),  # 08:30 exactly
        ("2026-11-28T15:00:00+00:00", "Sábado", "Sábado/Mañana sábado", "12:00-12:30"),  # Saturday noon
        ("2026-11-29T23:00:00+00:00", "Domingo", "Domingo/Mediodía domingo", "20:00-20:30"),  # Sunday 20:00
        (
            "2026-11-30T02:59:00+00:00",
            "Domingo",
            "Domingo/Pre nocturno domingo",
            "23:30-00:00",
        ),  # still Sunday
        # Daylight saving ends 2026-04-05 at 00:00 (-03) -> 23:00 (-04): the Saturday lasts an hour more.
        ("2026-04-05T02:59:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30-00:00"),  # 23:59 -03
        ("2026-04-05T03:30:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30-00:00"),  # 23:30 -04
        ("2026-04-05T04:30:00+00:00", "Domingo", "Domingo/Pre nocturno domingo", "00:30-01:00"),  # 00:30 -04
        # Daylight saving starts 2026-09-06 at 00:00 (-04) -> 01:00 (-03): midnight never happens.
        ("2026-09-06T03:59:00+00:00", "Sábado", "Sábado/Pre nocturno sábado", "23:30-00:00"),  # 23:59 -04
        ("2026-09-06T04:00:00+00:00", "Domingo", "Domingo/Nocturno domingo", "01:00-01:30"),  # 01:00 -03
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
    assert out["day_type"] == "Sábado" and names[out["time_period_id"]] == "Sábado/Punta mediodía sábado"
    monkeypatch.setenv("ARB_LOCAL_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ConfigError, match="ARB_LOCAL_TIMEZONE='Mars/Olympus'"):
        local_timezone()


def test_a_time_no_period_holds_is_a_problem_not_a_failure():
    from datetime import time

    gap = Periods.from_rows(
        [(1, "Laboral", time(0), time(11, 59, 59, 999999))],
        [(i + 1, time(i // 2, 30 * (i % 2)), None) for i in range(48)],
    )
    out = assign(
        pd.Series([_us("2026-11-25T12:00:00+00:00"), _us("2026-11-25T16:00:00+00:00")]), gap, SANTIAGO
    )
    assert out["time_period_id"].iloc[0] == 1 and out["problem"].iloc[0] is None
    assert pd.isna(out["time_period_id"].iloc[1])
    assert out["problem"].iloc[1] == "no Laboral time period holds local time 13:00:00.000000"


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


# -- zones -------------------------------------------------------------------------------------


def test_zones_on_boundaries_and_outside():
    square = "POLYGON (({a} 0, {b} 0, {b} 1, {a} 1, {a} 0))"
    index = ZoneIndex.from_wkt(
        [
            (5, square.format(a=0, b=1)),
            (3, square.format(a=1, b=2)),
            (9, "POLYGON ((oops"),
            (7, "POLYGON ((10 10, 11 10, 11 11, 10 11, 10 10))"),
        ]
    )
    lon = [0.5, 1.0, 1.0, 0.0, 1.5, 3.0, np.nan, 2.0]
    lat = [0.5, 0.5, 1.0, 0.5, 0.2, 3.0, 0.5, 0.0]
    zone, problems = index.locate(lon, lat)
    # inside; shared edge -> smaller id; shared corner; outer edge; inside; outside; none; outer corner
    assert zone.tolist() == [5, 3, 3, 5, 3, -1, -1, 3]
    assert problems[5] == "(3.0, 3.0) lies in no zone" and problems[6] == "no coordinates"
    assert [p for i, p in enumerate(problems) if i not in (5, 6)] == [None] * 6


# -- nearest stops -----------------------------------------------------------------------------


def _haversine(lon1, lat1, lon2, lat2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))


def test_nearest_two_stops_match_brute_force():
    rng = np.random.default_rng(7)
    stops = []
    for gtfs_id, n in ((1, 400), (2, 300)):
        lon, lat = rng.uniform(-70.85, -70.45, n), rng.uniform(-33.65, -33.30, n)
        stops += [
            (gtfs_id, f"P{gtfs_id}{i:04d}", x, y) for i, (x, y) in enumerate(zip(lon, lat, strict=True))
        ]
    v2_from = _us("2026-01-01T00:00:00+00:00")
    stop_set = StopSet.from_rows([(2, v2_from), (1, _us("2025-01-01T00:00:00+00:00"))], stops)
    m = 1500
    lon, lat = rng.uniform(-70.9, -70.4, m), rng.uniform(-33.7, -33.25, m)
    created = np.where(np.arange(m) % 3 == 0, v2_from - 1, np.where(np.arange(m) % 3 == 1, v2_from, 0))
    out = stop_set.nearest_two(lon, lat, created)
    frame = pd.DataFrame(stops, columns=["gtfs", "code", "lon", "lat"])
    for i in range(m):
        version = 2 if created[i] >= v2_from else 1  # before every version: the oldest
        mine = frame[frame["gtfs"] == version]
        xy = stop_set.plane.project(mine["lon"], mine["lat"])
        d = np.hypot(*(xy - stop_set.plane.project([lon[i]], [lat[i]])).T)
        best = np.argsort(d, kind="stable")[:2]
        assert out["gtfs_id"][i] == version
        assert [out["stop1_code"][i], out["stop2_code"][i]] == mine["code"].to_numpy()[best].tolist()
        assert out["stop1_distance_m"][i] == pytest.approx(d[best[0]]) and out["stop2_distance_m"][
            i
        ] == pytest.approx(d[best[1]])
    # The plane's metres are the sphere's within 0.2 % across the city.
    first = frame.set_index("code").loc[out["stop1_code"]]
    true = _haversine(lon, lat, first["lon"].to_numpy(), first["lat"].to_numpy())
    assert np.allclose(out["stop1_distance_m"], true, rtol=2e-3, atol=0.5)
    missing = stop_set.nearest_two([np.nan], [np.nan], [0])
    assert (
        missing["problem"][0] == "the event has no vote with coordinates" and missing["stop1_code"][0] is None
    )


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


# -- incremental runs on a real receiver ---------------------------------------------------------

PHONE = uuid.UUID(int=77)
T0 = datetime(2026, 11, 7, 15, 0, tzinfo=UTC)  # a Saturday, 12:00 in Santiago (a closed partition)


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
    import_zoning(conn.info.dsn, bundled_zoning())  # the real zoning (EOD 2012)


def _rows(dsn, table, columns="*"):
    with connect(dsn) as conn:
        cur = conn.execute(f"SELECT {columns} FROM {table} ORDER BY id")
        return {r[0]: dict(zip([d.name for d in cur.description], r, strict=True)) for r in cur.fetchall()}


def _by_name(results):
    return {r.derivation: r for r in results}


def test_runs_compute_what_changed_and_record_bad_rows(receiver_db):
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    first = _by_name(run_all(receiver_db))
    assert {r.mode for r in first.values()} == {"full"}
    assert first["zones"].computed == 1 + 3 + 2 and first["bus_plates"].computed == 3
    ev = _rows(receiver_db, "arb_pp_eventforbusv2_zone")
    assert ev[1]["zone_id"] is not None and ev[1]["problem"] is None
    assert ev[2]["zone_id"] is None and ev[2]["problem"] == "(-71.5, -34.0) lies in no zone"
    assert ev[3]["problem"] == "the event has no vote with coordinates"
    periods = _rows(receiver_db, "arb_pp_eventforbusstop_period")
    assert periods[1]["day_type"] == "Sábado" and periods[1]["local_time_creation"] == datetime(
        2026, 11, 7, 12
    )
    plates = _rows(receiver_db, "arb_pp_busv2_plate")
    assert [plates[i]["normalized_plate"] for i in (1, 2, 3)] == ["No Info.", "AB CD 12", None]
    assert "matches no known format" in plates[3]["problem"]
    info = _rows(receiver_db, "arb_pp_report_info")
    assert info[1]["bus_uuid"] == uuid.UUID(int=2) and info[1]["plate"] == "AB CD 12"  # by its unique plate
    assert info[2]["problem"].startswith("reportInfo is not JSON")
    assert _rows(receiver_db, "arb_pp_report_zone")[2]["problem"].startswith("reportInfo is not JSON")
    near = _rows(receiver_db, "arb_pp_eventforbusv2_nearest_stops")
    assert (near[1]["stop1_code"], near[1]["stop2_code"]) == ("PA1", "PA2")
    assert near[1]["stop1_distance_m"] == pytest.approx(92.9, abs=0.5)

    # Nothing changed: nothing computed.
    again = _by_name(run_all(receiver_db))
    assert {r.mode for r in again.values()} == {"incremental"} and sum(
        r.computed for r in again.values()
    ) == 0

    # A load changes event 3 (the loader sets arb_changed_at) and a new vote arrives for event 1.
    with connect(receiver_db) as conn:
        conn.execute(
            f'UPDATE "{P}eventforbusv2" SET "timeCreation" = %s, arb_changed_at = clock_timestamp() '
            "WHERE id = 3",
            (T0 + timedelta(days=1),),
        )
        conn.execute(
            f'INSERT INTO "{P}stadisticdatafromregistrationbus" (longitude, latitude, "timeStamp", '
            '"confirmDecline", "phoneId", "reportOfEvent_id") '
            "VALUES (-70.80, -33.60, %s, 'confirm', %s, 1)",
            (T0 + timedelta(minutes=1), PHONE),
        )
    before = _rows(receiver_db, "arb_pp_eventforbusv2_zone")
    third = _by_name(run_all(receiver_db))
    assert third["event_periods"].computed == 1 and third["zones"].computed == 2
    assert third["bus_event_nearest_stops"].computed == 2 and third["bus_plates"].computed == 0
    after = _rows(receiver_db, "arb_pp_eventforbusv2_zone")
    assert after[1]["zone_id"] != before[1]["zone_id"] and after[2] == before[2]
    assert _rows(receiver_db, "arb_pp_eventforbusv2_period")[3]["day_type"] == "Domingo"
    assert _rows(receiver_db, "arb_pp_eventforbusv2_nearest_stops")[1]["stop1_code"] == "PA3"

    # A trip of the same phone arrives later (with a complete): the event gets its direction.
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
    direction = _rows(receiver_db, "arb_pp_eventforbusv2_direction")
    assert [direction[i]["direction"] for i in (1, 2, 3)] == ["R", "R", None]

    # The report's bus arrives: the report is resolved by machine id.
    with connect(receiver_db) as conn:
        conn.execute(
            f'INSERT INTO "{P}busv2" (id, "registrationPlate", uuid) VALUES (4, \'ABCD12\', %s)',
            (uuid.UUID(int=9),),
        )
    fifth = _by_name(run_all(receiver_db))
    assert fifth["report_info"].computed == 0  # it was resolved already, by plate
    assert _rows(receiver_db, "arb_pp_report_info")[1]["bus_uuid"] == uuid.UUID(int=2)

    # New zones are reference data: every zone is recomputed; a deleted event takes its rows along.
    with connect(receiver_db) as conn:
        conn.execute(f'DELETE FROM "{ZONES}" WHERE id > 400')  # another zoning
        conn.execute(f'DELETE FROM "{P}stadisticdatafromregistrationbus" WHERE "reportOfEvent_id" = 2')
        conn.execute(f'DELETE FROM "{P}eventforbusv2" WHERE id = 2')
    zones = run_derivation(receiver_db, Zones())
    assert zones.mode == "full" and zones.computed == 1 + 2 + 2
    for table in ("zone", "period", "direction", "nearest_stops"):
        assert 2 not in _rows(receiver_db, f"arb_pp_eventforbusv2_{table}")


def test_a_window_is_recomputed_on_request(receiver_db):
    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    run_all(receiver_db)
    before = _rows(receiver_db, "arb_pp_eventforbusv2_period", "id, processed_at")
    outside = run_all(
        receiver_db, Scope(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), recompute_window=True)
    )
    assert sum(r.computed for r in outside) == 0
    inside = _by_name(run_all(receiver_db, Scope(T0, T0 + timedelta(minutes=5), recompute_window=True)))
    assert (
        inside["event_periods"].computed == 4 and inside["bus_plates"].computed == 1
    )  # the bus of its events
    after = _rows(receiver_db, "arb_pp_eventforbusv2_period", "id, processed_at")
    assert all(after[i]["processed_at"] > before[i]["processed_at"] for i in before)
    assert all(r.mode == "full" for r in run_all(receiver_db, Scope(full=True)))


def test_cli_materializes_a_past_partition_by_hand(receiver_db, tmp_path):
    """`dagster asset materialize --select group:receiver_postprocess --partition KEY`
    recomputes that window."""
    import os

    from arb_pipeline.dagster_common.partitions import PARTIAL

    with connect(receiver_db) as conn:
        _seed_receiver(conn)
    run_all(receiver_db)
    before = _rows(receiver_db, "arb_pp_eventforbusv2_period", "id, processed_at")
    key = PARTIAL.get_partition_key_for_timestamp(T0.timestamp())
    (tmp_path / "home").mkdir()
    env = {
        **os.environ,
        "ARB_RECEIVER_DSN": receiver_db,
        "ARB_INBOX_DIR": str(tmp_path / "inbox"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    materialize("receiver", "receiver_postprocess", key, env)
    after = _rows(receiver_db, "arb_pp_eventforbusv2_period", "id, processed_at")
    assert all(after[i]["processed_at"] > before[i]["processed_at"] for i in before)


def test_every_derivation_is_registered_once():
    names = [d.name for d in all_derivations()]
    assert len(names) == len(set(names)) == 6
    assert BusEventDirection(30).reference_digest(None) != BusEventDirection(60).reference_digest(None)
