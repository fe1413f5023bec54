"""Equivalence with TranSappViz's transform.py: one test per row of docs/transappviz-equivalence.md
(periods, plates, reports here; zones, stops, direction and the marker in
test_transappviz_equivalence_places.py).

Each test seeds a real receiver (TranSappViz's own tables and columns, migration 0200, on
PostGIS), runs every derivation through the engine and reads what TranSappViz's views read:
its columns and tables. The row's id (P1, L2, ...) starts each test's name; the table says
what the original does on the same input and whether we do the same or differ on purpose.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.transappviz import (
    BUS_UUID,
    IN_1,
    IN_2,
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
    stop_event,
)

# -- P: periods and day types ------------------------------------------------------------------


def test_P1_period_and_day_type_come_from_local_time_not_utc(city):
    """Friday 23:00 in Santiago is Saturday 02:00 UTC: the original took the UTC weekday
    and time of day for the period (Sábado, Nocturno sábado); TranSappViz's half-hour
    already used local time."""
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-11-28T02:00:00+00:00"))  # Friday 23:00 -03
        bus_event(conn, 2, at("2026-11-25T12:00:00+00:00"))  # Wednesday 09:00 -03
        stop_event(conn, 1, at("2026-11-28T02:00:00+00:00"))
    derive(city)
    want = {
        1: ("Laboral", "Pre nocturno", "23:00 - 23:29"),
        2: ("Laboral", "Transicion punta mañana", "09:00 - 09:29"),
    }
    assert periods(city, "eventforbusv2") == want
    assert periods(city, "eventforbusstop") == {1: want[1]}


def test_P2_april_daylight_saving_change(city):
    """Santiago leaves summer time on Sunday 5 April 2026 at 03:00 UTC (00:00 -03 becomes
    23:00 -04): 23:30 UTC is 20:30 on the Saturday before and 19:30 on the Sunday after."""
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-04-04T23:30:00+00:00"))  # Saturday 20:30 -03
        bus_event(conn, 2, at("2026-04-05T23:30:00+00:00"))  # Sunday 19:30 -04
        bus_event(conn, 3, at("2026-04-05T02:30:00+00:00"))  # Saturday 23:30 -03, first time
        bus_event(conn, 4, at("2026-04-05T03:30:00+00:00"))  # Saturday 23:30 -04, again
        stop_event(conn, 1, at("2026-04-04T23:30:00+00:00"))
        stop_event(conn, 2, at("2026-04-05T23:30:00+00:00"))
    derive(city)
    saturday = ("Sábado", "Transicion sábado nocturno", "20:30 - 20:59")
    sunday = ("Domingo", "Tarde domingo", "19:30 - 19:59")
    late = ("Sábado", "Pre nocturno sábado", "23:30 - 23:59")
    assert periods(city, "eventforbusv2") == {1: saturday, 2: sunday, 3: late, 4: late}
    assert periods(city, "eventforbusstop") == {1: saturday, 2: sunday}


def test_P3_september_daylight_saving_change(city):
    """Santiago enters summer time on Sunday 6 September 2026 at 04:00 UTC (00:00 -04
    becomes 01:00 -03): 23:30 UTC is 19:30 on the Saturday before and 20:30 on the Sunday after."""
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-09-05T23:30:00+00:00"))  # Saturday 19:30 -04
        bus_event(conn, 2, at("2026-09-06T23:30:00+00:00"))  # Sunday 20:30 -03
        bus_event(conn, 3, at("2026-09-06T03:59:59+00:00"))  # Saturday 23:59:59 -04
        bus_event(conn, 4, at("2026-09-06T04:00:00+00:00"))  # Sunday 01:00:00 -03
        stop_event(conn, 1, at("2026-09-05T23:30:00+00:00"))
        stop_event(conn, 2, at("2026-09-06T23:30:00+00:00"))
    derive(city)
    saturday = ("Sábado", "Tarde sábado", "19:30 - 19:59")
    sunday = ("Domingo", "Tarde domingo", "20:30 - 20:59")
    assert periods(city, "eventforbusv2") == {
        1: saturday,
        2: sunday,
        3: ("Sábado", "Pre nocturno sábado", "23:30 - 23:59"),
        4: ("Domingo", "Nocturno domingo", "01:00 - 01:29"),
    }
    assert periods(city, "eventforbusstop") == {1: saturday, 2: sunday}


def test_P4_the_malformed_domingo_row_of_migration_0900(city):
    """0900 writes 'Nocturno domingo' ending '05:29:5905:30:00'; Django's time parser reads
    its leading 05:29:59, so TranSappViz's table holds 01:00:00-05:29:59, and so does ours:
    the Sunday periods meet second to second, and a Sunday night event finds its period."""
    rows = query(
        city,
        f'SELECT name, initial_time::text, end_time::text FROM "{P}timeperiod" '
        "WHERE day_type = 'Domingo' ORDER BY initial_time",
    )
    assert ("Nocturno domingo", "01:00:00", "05:29:59") in rows
    ends = [datetime.strptime(e, "%H:%M:%S") for _, _, e in rows[:-1]]
    starts = [datetime.strptime(s, "%H:%M:%S") for _, s, _ in rows[1:]]
    assert [s - e for s, e in zip(starts, ends, strict=True)] == [timedelta(seconds=1)] * (len(rows) - 1)
    assert query(city, f'SELECT count(*) FROM "{P}timeperiod"') == [(29,)]
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-11-29T06:00:00+00:00"))  # Sunday 03:00 -03
        bus_event(conn, 2, at("2026-11-29T08:29:59+00:00"))  # Sunday 05:29:59
        bus_event(conn, 3, at("2026-11-29T08:30:00+00:00"))  # Sunday 05:30:00
    derive(city)
    assert periods(city, "eventforbusv2") == {
        1: ("Domingo", "Nocturno domingo", "03:00 - 03:29"),
        2: ("Domingo", "Nocturno domingo", "05:00 - 05:29"),
        3: ("Domingo", "Transicion domingo mañana", "05:30 - 05:59"),
    }


def test_P5_a_time_of_day_is_taken_to_the_second(city):
    """The original drops the microseconds before looking up periods that end at :59;
    08:29:59.9 is still Punta mañana, not in the gap before 08:30:00."""
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-11-25T11:29:59.900000+00:00"))  # Wednesday 08:29:59.9 -03
    derive(city)
    assert periods(city, "eventforbusv2") == {1: ("Laboral", "Punta mañana", "08:00 - 08:29")}


def test_H1_half_hour_periods_in_local_time(city):
    """The original already took the half-hour in local time (``timezone.localtime``), to
    the second: the same, for both event tables, up to the day's last second."""
    with connect(city) as conn:
        bus_event(conn, 1, at("2026-11-26T02:59:59.900000+00:00"))  # Wednesday 23:59:59.9 -03
        bus_event(conn, 2, at("2026-07-01T04:00:00+00:00"))  # Wednesday 00:00 -04 (winter)
        stop_event(conn, 1, at("2026-11-25T03:30:00+00:00"))  # Wednesday 00:30 -03
    derive(city)
    half = {k: v[2] for k, v in periods(city, "eventforbusv2").items()}
    assert half == {1: "23:30 - 23:59", 2: "00:00 - 00:29"}
    assert periods(city, "eventforbusstop")[1][2] == "00:30 - 00:59"
    assert query(city, f'SELECT count(*), min(name), max(name) FROM "{P}halfhourperiod"') == [
        (48, "00:00 - 00:29", "23:30 - 23:59")
    ]


# -- L: licence plates ------------------------------------------------------------------------


def test_L1_bus_plates_stay_as_shipped_and_are_checked(city):
    """The original rewrote the replicated ``busv2."registrationPlate"`` in place (ABCD12 ->
    AB CD 12, DUMMYLPT -> No Info.). Here it stays as the sender has it (parity; the next
    load would ship it back), the bus is marked ``transformed`` and a plate in no known
    format is a problem; the formatted plate is served in ``reportinfo`` (R3)."""
    derive(city)
    rows = query(city, f'SELECT id, "registrationPlate", transformed FROM "{P}busv2" ORDER BY id')
    assert rows == [
        (1, "DUMMYLPT", True),
        (2, "ABCD12", True),
        (3, "bb1234", True),
        (4, "XYZ", True),
        (5, "dummylpt", True),
    ]
    assert set(problems(city, "busv2", "bus_plates")) == {4}


def test_L2_a_report_s_plate_in_both_formats_and_dummylpt(city):
    """A bus report's plate, upper-cased and spaced XX XX NN, in either format; spaced
    already stays; DUMMYLPT in any case is 'No Info.'; separators clients typed are dropped
    (the original spaced 'bb-12-34' as 'BB -1 2-34'). No bus has these plates."""
    plates = ["qrst12", "QR 12 34", "qr1234", "dummylpt", "qr-12-35"]
    with connect(city) as conn:
        for rid, plate in enumerate(plates, 1):
            report(conn, rid, bus_info(plate))
    derive(city)
    got = {k: v["registrationPlate"] for k, v in report_info(city).items()}
    assert got == {1: "QR ST 12", 2: "QR 12 34", 3: "QR 12 34", 4: "No Info.", 5: "QR 12 35"}


# -- R: reportInfo to ReportInfo rows --------------------------------------------------------


def test_R1_a_bus_report(city):
    """The bus shape: type, service, the bus's coordinates, the user's, the bus by its
    machine id and the plate as the bus's formatted plate; the zone by the user's location."""
    with connect(city) as conn:
        report(conn, 1, bus_info("abcd12", machine=str(BUS_UUID), user=IN_2))
    derive(city)
    assert report_info(city)[1] == {
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
        report(conn, 1, info)
    derive(city)
    assert report_info(city)[1] == {
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
        report(conn, 1, bus_info("ABCD12"))  # bus 2 by its unique plate
        report(conn, 2, bus_info("BB 12 34"))  # bus 3 (bb1234) by its unique plate
        report(conn, 3, bus_info("DUMMYLPT"))
        report(conn, 4, bus_info("zz9999"))  # a new-format plate no bus has
    derive(city)
    got = {k: (v["registrationPlate"], v["busUUID"]) for k, v in report_info(city).items()}
    assert got == {
        1: ("AB CD 12", BUS_UUID),
        2: ("BB 12 34", uuid.UUID(int=3)),
        3: ("No Info.", None),
        4: ("ZZ 99 99", None),
    }


def test_R4_bad_reportinfo_is_a_problem_and_the_other_reports_still_get_their_row(city):
    """The original's json.loads raised out of the whole run; a report with neither bus
    nor stop got no row ('{}' in its own test_reportWithBadReportInfo). Here none of them
    gets a row, each gets a problem, and the other reports are derived."""
    with connect(city) as conn:
        report(conn, 1, "{broken")
        report(conn, 2, {"locationUser": {"latitude": IN_1[1], "longitude": IN_1[0]}})
        report(conn, 3, bus_info("ABCD12", machine=str(BUS_UUID)))
        report(conn, 4, "{}")
    derive(city)
    assert set(report_info(city)) == {3}
    found = problems(city, "report", "report_info")
    assert set(found) == {1, 2, 4} and "JSON" in found[1]


def test_R5_the_user_s_coordinates_in_every_shape_clients_sent(city):
    r"""The user's position is text behind a prefix: TranSappViz's own test
    (tests/testTransform.py, test_reportWithLocationUser) stores the JSON text
    ``"\/-70.6264852"`` (two characters before the number once parsed), which transform.py
    strips with ``value[2:]``; its migration 0918 read ``"\/-33.75654"`` (one character),
    where ``[2:]`` drops the sign. We drop any leading backslashes and slashes, then read
    the number, and read plain numbers too (NULL in the original). Text that is no number
    is NULL in both."""
    stop = {"id": "PH217", "longitude": -70.61356902, "latitude": -33.50856476}

    def info(lat, lon):
        return {"locationUser": {"latitude": lat, "longitude": lon}, "bus_stop": stop}

    with connect(city) as conn:
        report(conn, 1, info("\\/-33.4929384", "\\/-70.6264852"))  # TranSappViz's test input
        report(
            conn,
            2,
            '{"locationUser": {"latitude": "\\/-33.43", "longitude": "\\/-70.61"}, '
            '"bus_stop": {"id": "PH217", "latitude": -33.5, "longitude": -70.6}}',
        )
        report(conn, 3, info(IN_1[1], IN_1[0]))
        report(conn, 4, info("test", "test"))
    derive(city)
    got = {k: (v["userLatitude"], v["userLongitude"], v["comuna"]) for k, v in report_info(city).items()}
    assert got == {
        1: (-33.4929384, -70.6264852, None),
        2: (-33.43, -70.61, "Providencia"),
        3: (IN_1[1], IN_1[0], "Providencia"),
        4: (None, None, None),
    }


def test_R6_a_service_longer_than_five_characters(city):
    """The original wrote '-' for a service longer than 5 characters (its own test sends
    'this is a wrong service name'); we keep a service TranSappViz's varchar(11) holds and
    leave a longer one out, with a problem (decided: a real service such as 'I09-LONG'
    is information the views can show; '-' only hid it)."""
    with connect(city) as conn:
        report(conn, 1, bus_info("ABCD12", machine=str(BUS_UUID), service="506e"))
        report(conn, 2, bus_info("ABCD12", machine=str(BUS_UUID), service="I09-LONG"))
        report(conn, 3, bus_info("DUMMYLPT", machine=str(BUS_UUID), service="this is a wrong service name"))
    derive(city)
    got = {k: v["service"] for k, v in report_info(city).items()}
    assert got == {1: "506e", 2: "I09-LONG", 3: None}
    assert "service" in problems(city, "report", "report_info")[3]


def test_R7_the_plate_of_a_report_whose_bus_is_known(city):
    """When the bus is found, the original showed the bus's (formatted) plate whatever the
    report said, and so do we (decided: the machine id names the bus the phone was on; a
    typed plate is the user's guess)."""
    with connect(city) as conn:
        report(conn, 1, bus_info("DUMMYLPT", machine=str(BUS_UUID)))
        report(conn, 2, bus_info("zz9999", machine=str(BUS_UUID)))
        report(conn, 3, bus_info("XYZ", machine=str(BUS_UUID)))
    derive(city)
    got = {k: (v["registrationPlate"], v["busUUID"]) for k, v in report_info(city).items()}
    assert got == {1: ("AB CD 12", BUS_UUID), 2: ("AB CD 12", BUS_UUID), 3: ("AB CD 12", BUS_UUID)}


def test_every_row_of_the_table_has_its_test_and_every_test_its_row():
    here = Path(__file__).resolve().parent
    doc = (here.parent / "docs" / "transappviz-equivalence.md").read_text()
    rows = set(re.findall(r"^\| ([A-Z][0-9]) \|", doc, flags=re.M))
    tests = set()
    for module in here.glob("test_transappviz_equivalence*.py"):
        tests |= set(re.findall(r"^def test_([A-Z][0-9])_", module.read_text(), flags=re.M))
    assert rows == tests, (
        f"rows without a test: {sorted(rows - tests)}; tests without a row: {sorted(tests - rows)}"
    )
