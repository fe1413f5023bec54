"""Each report's ``reportInfo`` (the client's JSON) parsed into a row.

    {"locationUser": {"latitude": .., "longitude": ..},
     "bus": {"licensePlate": .., "machineId": .., "service": .., "latitude": .., "longitude": ..}}

or a ``bus_stop`` / ``busStop`` object (``id``, ``latitude``, ``longitude``) instead of
``bus``. A bus report's bus is found by its machine id (the bus's uuid) or, failing
that, by its normalised plate when exactly one bus has it. Whatever is wrong with a
report (not JSON, neither bus nor stop, coordinates that aren't numbers, an unknown
bus) is recorded in ``problem``; the fields that could be read are kept.

Each report gets one TranSappViz ``AndroidRequests_reportinfo`` row (``report_id``), its
columns filled as TranSappViz's transform fills them, plus the zone of the user's
location (PostGIS, zones.py) and, for a bus report, the direction of the phone's trip
(direction.py), so the row is complete (``transformed``) when written. A report gives
no row when its reportInfo names no bus or stop, or lacks the bus's or stop's
coordinates (``reportType``, ``longitude``, ``latitude`` are NOT NULL there): its
problem says why. ``registrationPlate`` (NOT NULL varchar(8)) holds the formatted plate
(``AB CD 12``; ``No Info.`` for ``DUMMYLPT``) of the report, else of its resolved bus;
``''`` when there is none (stop reports, a plate in no known format), which the views
show as "No Info." as they do for TranSappViz's own stop reports. A service or stop
code longer than its column is left out, with a problem.
"""

from __future__ import annotations

import json
import math
import uuid

import pandas as pd
from psycopg import sql

from arb_pipeline.postprocess import plates
from arb_pipeline.postprocess.direction import latest_direction, max_gap_minutes, trips_changed
from arb_pipeline.postprocess.engine import OUT, Derivation, Source, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.postprocess.zones import zone_of, zones_digest

STOP_KEYS = ("bus_stop", "busStop")
FIELDS = (
    "report_type",
    "plate_raw",
    "plate",
    "service",
    "machine_id",
    "bus_uuid",
    "stop_code",
    "latitude",
    "longitude",
    "user_latitude",
    "user_longitude",
)


def _number(value, low: float, high: float) -> float | None:
    """A coordinate from a number or a numeric string; None if it isn't one in range.
    Clients sent the user's position as text behind ``\\/`` (TranSappViz's transform.py
    and its migration 0918 strip it): leading backslashes and slashes are dropped."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value.strip().lstrip("\\/") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and low <= x <= high else None


def _text(value) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _point(obj, what: str, problems: list[str]) -> tuple[float | None, float | None]:
    if not isinstance(obj, dict):
        problems.append(f"no {what} coordinates")
        return None, None
    lat, lon = _number(obj.get("latitude"), -90, 90), _number(obj.get("longitude"), -180, 180)
    if lat is None or lon is None:
        problems.append(
            f"{what} coordinates are not numbers in range: "
            f"latitude={obj.get('latitude')!r}, longitude={obj.get('longitude')!r}"
        )
        return None, None
    return lat, lon


def parse(text) -> dict:
    """One reportInfo text to the fields of FIELDS plus ``problem`` (None when all is well)."""
    row: dict = dict.fromkeys(FIELDS)
    problems: list[str] = []
    try:
        doc = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        row["problem"] = f"reportInfo is not JSON ({exc.msg} at character {exc.pos})"
        return row
    if not isinstance(doc, dict):
        row["problem"] = "reportInfo is not a JSON object"
        return row
    row["user_latitude"], row["user_longitude"] = _point(doc.get("locationUser"), "user", problems)
    bus = doc.get("bus")
    stop_key = next((k for k in STOP_KEYS if isinstance(doc.get(k), dict)), None)
    if isinstance(bus, dict) and stop_key:
        problems.append(f"reportInfo has both bus and {stop_key}: report type unknown")
    elif isinstance(bus, dict):
        row["report_type"] = "bus"
        row["plate_raw"] = _text(bus.get("licensePlate"))
        row["machine_id"] = _text(bus.get("machineId"))
        row["service"] = _text(bus.get("service"))
        row["latitude"], row["longitude"] = _point(bus, "bus", problems)
    elif stop_key:
        stop = doc[stop_key]
        row["report_type"] = "busStop"
        row["stop_code"] = _text(stop.get("id", stop.get("code")))
        row["latitude"], row["longitude"] = _point(stop, "bus stop", problems)
        if row["stop_code"] is None:
            problems.append(f"{stop_key} has no stop id")
    else:
        problems.append("reportInfo has neither bus nor bus_stop/busStop")
    row["problem"] = "; ".join(problems) or None
    return row


def user_location(texts: pd.Series) -> pd.DataFrame:
    """longitude, latitude and problem of the user's location in each reportInfo."""
    parsed = [parse(t) for t in texts]
    return pd.DataFrame(
        {
            "longitude": [p["user_longitude"] for p in parsed],
            "latitude": [p["user_latitude"] for p in parsed],
            "problem": [
                None if p["user_latitude"] is not None else (p["problem"] or "no user coordinates")
                for p in parsed
            ],
        },
        index=texts.index,
    )


def _as_uuid(text) -> str | None:
    try:
        return str(uuid.UUID(str(text)))
    except (ValueError, TypeError):
        return None


def resolve_buses(frame: pd.DataFrame, buses: pd.DataFrame) -> pd.DataFrame:
    """Fill ``bus_uuid`` of bus reports from ``buses`` (uuid, registrationPlate): the
    machine id when it is a known bus, else the normalised plate when unique."""
    known = set(buses["uuid"].astype(str))
    normalized = plates.normalize(buses["registrationPlate"])["normalized_plate"]
    by_plate = pd.DataFrame({"plate": normalized, "uuid": buses["uuid"].astype(str)}).dropna()
    by_plate = by_plate[by_plate["plate"] != plates.UNKNOWN]
    counts = by_plate["plate"].value_counts()
    unique = by_plate[by_plate["plate"].map(counts) == 1].set_index("plate")["uuid"]
    frame = frame.copy()
    is_bus = frame["report_type"] == "bus"
    machine = frame["machine_id"].map(_as_uuid)
    found = machine.where(machine.isin(known) & is_bus)
    by_plate_hit = frame["plate"].map(unique).where(is_bus & found.isna())
    frame["bus_uuid"] = found.fillna(by_plate_hit).where(is_bus, None)
    lost = is_bus & frame["bus_uuid"].isna()
    if lost.any():
        notes = [
            f"no bus with machine id {m!r} nor a unique plate {p!r}"
            for m, p in zip(frame.loc[lost, "machine_id"], frame.loc[lost, "plate_raw"], strict=True)
        ]
        frame.loc[lost, "problem"] = [
            n if old is None or old != old else f"{old}; {n}"
            for old, n in zip(frame.loc[lost, "problem"], notes, strict=True)
        ]
    return frame


def parse_reports(texts: pd.Series, buses: pd.DataFrame) -> pd.DataFrame:
    """reportInfo texts to rows (FIELDS + problem), buses resolved."""
    frame = pd.DataFrame([parse(t) for t in texts], index=texts.index, columns=[*FIELDS, "problem"])
    norm = plates.normalize(frame["plate_raw"])
    frame["plate"] = norm["normalized_plate"].where(frame["report_type"] == "bus")
    bad_plate = (frame["report_type"] == "bus") & frame["plate_raw"].notna() & norm["problem"].notna()
    if bad_plate.any():  # worth knowing, but the machine id may still find the bus
        frame.loc[bad_plate, "problem"] = [
            n if old is None or old != old else f"{old}; {n}"
            for old, n in zip(frame.loc[bad_plate, "problem"], norm.loc[bad_plate, "problem"], strict=True)
        ]
    return tidy(resolve_buses(frame, buses))


_INFO = app_table_sql("reportinfo")
# reportinfo's columns, in arb_pp_out as in the table (longer text would not fit).
COLUMNS = (
    "reportType",
    "busUUID",
    "service",
    "registrationPlate",
    "stopCode",
    "longitude",
    "latitude",
    "userLatitude",
    "userLongitude",
    "zonification_id",
    "direction",
)
WIDTHS = {"service": 11, "stopCode": 6, "registrationPlate": 8}
# Unresolved bus reports whose bus arrived since: its uuid is the report's machine id, or
# its plate (as plates.py normalises it) the report's.
_BUS_ARRIVED = (
    f"SELECT r.report_id FROM {_INFO} r JOIN {app_table_sql('report')} s ON s.id = r.report_id "
    f"JOIN {app_table_sql('busv2')} b ON b.arb_changed_at > %(since)s "
    """WHERE r."reportType" = 'bus' AND r."busUUID" IS NULL """
    """AND (position(b.uuid::text in s."reportInfo") > 0 OR (r."registrationPlate" <> '' """
    """AND replace(r."registrationPlate", ' ', '') = """
    r"""upper(regexp_replace(b."registrationPlate", '[\s.\-]', '', 'g'))))"""
)


def _join(old, note):
    return note if old is None or old != old else f"{old}; {note}"


def info_rows(texts: pd.Series, buses: pd.DataFrame) -> pd.DataFrame:
    """reportInfo texts to reportinfo's columns (zone and direction left to SQL) + problem;
    ``reportType`` is None where the report gives no row."""
    parsed = parse_reports(texts, buses)
    bus_plate = dict(
        zip(
            buses["uuid"].astype(str),
            plates.normalize(buses["registrationPlate"])["normalized_plate"],
            strict=True,
        )
    )
    out = pd.DataFrame(index=parsed.index)
    out["reportType"] = parsed["report_type"].where(parsed["latitude"].notna() & parsed["longitude"].notna())
    out["busUUID"] = parsed["bus_uuid"]
    # The bus's plate when the bus is found and its plate is a real one (as TranSappViz
    # shows it: the bus the phone was on, whatever the user typed), else the report's.
    of_bus = parsed["bus_uuid"].map(bus_plate)
    of_bus = of_bus.where(of_bus.notna() & (of_bus != plates.UNKNOWN))
    plate = of_bus.where(of_bus.notna(), parsed["plate"])
    out["registrationPlate"] = plate.where(plate.notna(), "")
    out["service"], out["stopCode"] = parsed["service"], parsed["stop_code"]
    out["longitude"], out["latitude"] = parsed["longitude"], parsed["latitude"]
    out["userLatitude"], out["userLongitude"] = parsed["user_latitude"], parsed["user_longitude"]
    out["zonification_id"], out["direction"] = None, None
    out["problem"] = parsed["problem"]
    for column, width in WIDTHS.items():
        long = out[column].map(lambda v, w=width: isinstance(v, str) and len(v) > w)
        if long.any():
            out.loc[long, "problem"] = [
                _join(old, f"{column} {v!r} is longer than {width} characters")
                for old, v in zip(out.loc[long, "problem"], out.loc[long, column], strict=True)
            ]
            out.loc[long, column] = "" if column == "registrationPlate" else None
    text = ["reportType", "busUUID", "service", "registrationPlate", "stopCode", "direction", "problem"]
    out[text] = out[text].astype(object).where(out[text].notna(), None)
    return out


class ReportInfo(Derivation):
    """One ``AndroidRequests_reportinfo`` row per report, from its reportInfo."""

    name = "report_info"
    version = "2"  # TranSappViz's reportinfo rows, with zone and direction

    def __init__(self, direction_max_gap_minutes: int | None = None):
        self.max_gap = max_gap_minutes(direction_max_gap_minutes)
        self.sources = (
            Source(
                app_table("report"),
                COLUMNS,
                's.id, s."reportInfo" AS info',
                extra=(
                    _BUS_ARRIVED,
                    # A trip that arrives later gives a bus report its direction.
                    trips_changed("report", self.max_gap, "timeStamp"),
                ),
                out_like=app_table("reportinfo"),
            ),
        )

    def reference_digest(self, conn) -> str:
        return f"v{self.version}:max_gap={self.max_gap}:zones={zones_digest(conn)}"

    def prepare(self, conn) -> pd.DataFrame:
        return pd.DataFrame(
            conn.execute(f'SELECT uuid::text, "registrationPlate" FROM {app_table_sql("busv2")}').fetchall(),
            columns=["uuid", "registrationPlate"],
        )

    def compute(self, conn, ctx: pd.DataFrame, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([rows[["id"]], info_rows(rows["info"], ctx)], axis=1)

    def fill(self, conn, ctx, source: Source, bounds: dict) -> None:
        super().fill(conn, ctx, source, bounds)
        report = app_table_sql("report")
        conn.execute(
            f"""UPDATE {OUT} o SET "registrationPlate" = coalesce(o."registrationPlate", ''),
                zonification_id = {zone_of('o."userLongitude"', 'o."userLatitude"')},
                direction = CASE WHEN o."reportType" = 'bus' THEN
                    {latest_direction('r."phoneId"', 'r."timeStamp"', self.max_gap)} END
            FROM {report} r WHERE r.id = o.id"""
        )
        conn.execute(
            f"""UPDATE {OUT} SET problem = concat_ws('; ', problem,
                format('the user''s location (%s, %s) lies in no zone', "userLongitude", "userLatitude"))
            WHERE zonification_id IS NULL AND "userLongitude" IS NOT NULL AND "userLatitude" IS NOT NULL"""
        )

    def write(self, conn, source: Source, others_done: str | None = None) -> None:
        """One row per report: reports that give none lose theirs, a report's extra rows
        (a receiver TranSappViz filled twice) go, the first is updated, missing ones added."""
        cols = [sql.Identifier(c) for c in COLUMNS]
        info, out = sql.SQL(_INFO), sql.Identifier(OUT)
        conn.execute(
            sql.SQL(
                "DELETE FROM {i} r USING {o} o WHERE r.report_id = o.id AND (o.{t} IS NULL "
                "OR r.id > (SELECT min(f.id) FROM {i} f WHERE f.report_id = o.id))"
            ).format(i=info, o=out, t=sql.Identifier("reportType"))
        )
        conn.execute(
            sql.SQL(
                "UPDATE {i} r SET {sets}, transformed = true FROM {o} o WHERE r.report_id = o.id "
                "AND o.{t} IS NOT NULL AND ({rc}, r.transformed) IS DISTINCT FROM ({oc}, true)"
            ).format(
                i=info,
                o=out,
                t=sql.Identifier("reportType"),
                sets=sql.SQL(", ").join(sql.SQL("{c} = o.{c}").format(c=c) for c in cols),
                rc=sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in cols),
                oc=sql.SQL(", ").join(sql.SQL("o.{}").format(c) for c in cols),
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {i} (report_id, {cols}, transformed) SELECT o.id, {oc}, true FROM {o} o "
                "WHERE o.{t} IS NOT NULL AND NOT EXISTS (SELECT FROM {i} r WHERE r.report_id = o.id) "
                "ORDER BY o.id"
            ).format(
                i=info,
                o=out,
                t=sql.Identifier("reportType"),
                cols=sql.SQL(", ").join(cols),
                oc=sql.SQL(", ").join(sql.SQL("o.{}").format(c) for c in cols),
            )
        )
