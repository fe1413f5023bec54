"""Each report's ``reportInfo`` (the client's JSON) parsed into a row.

    {"locationUser": {"latitude": .., "longitude": ..},
     "bus": {"licensePlate": .., "machineId": .., "service": .., "latitude": .., "longitude": ..}}

or a ``bus_stop`` / ``busStop`` object (``id``, ``latitude``, ``longitude``) instead of
``bus``. A bus report's bus is found by its machine id (the bus's uuid) or, failing
that, by its normalised plate when exactly one bus has it. Whatever is wrong with a
report (not JSON, neither bus nor stop, coordinates that aren't numbers, an unknown
bus) is recorded in ``problem``; the fields that could be read are kept.
"""

from __future__ import annotations

import json
import math
import uuid

import pandas as pd

from arb_pipeline.postprocess import plates
from arb_pipeline.postprocess.engine import Derivation, Source, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql

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
    """A coordinate from a number or a numeric string; None if it isn't one in range."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value.strip() if isinstance(value, str) else value)
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


class ReportInfo(Derivation):
    """reportInfo of every report, parsed (``arb_pp_report_info``)."""

    name = "report_info"
    sources = (
        Source(
            app_table("report"),
            "arb_pp_report_info",
            FIELDS,
            's.id, s.arb_changed_at::text AS version, s."reportInfo" AS info',
            # A bus that arrives after its report resolves the report's bus uuid.
            extra=(
                "SELECT ri.id FROM arb_pp_report_info ri "
                "WHERE ri.report_type = 'bus' AND ri.bus_uuid IS NULL "
                f"AND EXISTS (SELECT 1 FROM {app_table_sql('busv2')} b WHERE b.arb_changed_at > %(since)s "
                "AND b.arb_changed_at >= ri.processed_at)",
            ),
        ),
    )

    def prepare(self, conn) -> pd.DataFrame:
        return pd.DataFrame(
            conn.execute(f'SELECT uuid::text, "registrationPlate" FROM {app_table_sql("busv2")}').fetchall(),
            columns=["uuid", "registrationPlate"],
        )

    def compute(self, conn, ctx: pd.DataFrame, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([rows[["id", "version"]], parse_reports(rows["info"], ctx)], axis=1)
