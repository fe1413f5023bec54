"""Time period and half-hour period of each event, from its local time of creation.

Local time is the event's ``timeCreation`` instant converted to ``ARB_LOCAL_TIMEZONE``
(default America/Santiago) with zoneinfo, so it is right on both sides of a
daylight-saving change (the original compared UTC times of day with local ranges).
The day type is the local weekday: Monday to Friday ``Laboral``, Saturday ``Sábado``,
Sunday ``Domingo`` (public holidays are not known here and count as their weekday).
Periods are TranSappViz's rows (``AndroidRequests_timeperiod`` with ``day_type``,
``AndroidRequests_halfhourperiod``; receiver migration 0200): closed ranges of local time
of day to the second, so the local time is taken to the second (as TranSappViz's
transform does) before it is looked up. The result goes to TranSappViz's columns
``"timePeriod_id"`` and ``"halfHourPeriod_id"`` of both event tables.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from arb_pipeline.postprocess.engine import Derivation, Source, nones, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.settings import LOCAL_TIMEZONE

DAY_TYPES = ("Laboral", "Sábado", "Domingo")
US_PER_SECOND = 1_000_000
US_PER_HALF_HOUR = 1_800_000_000


def local_timezone(name: str | None = None) -> ZoneInfo:
    """The receiver's local time zone: ``name``, else the ARB_LOCAL_TIMEZONE setting."""
    return ZoneInfo(LOCAL_TIMEZONE.parse_text(name) if name else LOCAL_TIMEZONE.read())


def _us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


@dataclass(frozen=True)
class Periods:
    """The period tables as sorted arrays: per day type, starts and ends in µs of the day."""

    by_day_type: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # ids, starts, ends
    half_hour_ids: np.ndarray  # 48 slots, -1 where missing

    @classmethod
    def from_rows(cls, time_periods, half_hours) -> "Periods":
        """``time_periods``: (id, day_type, initial_time, end_time);
        ``half_hours``: (id, initial_time, end_time)."""
        by = {}
        for day_type in DAY_TYPES:
            rows = sorted((_us(s), _us(e), i) for i, d, s, e in time_periods if d == day_type)
            by[day_type] = (
                np.array([r[2] for r in rows], dtype=np.int64),
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=np.int64),
            )
        slots = np.full(48, -1, dtype=np.int64)
        for i, s, _e in half_hours:
            slots[_us(s) // US_PER_HALF_HOUR] = i
        return cls(by, slots)

    @classmethod
    def load(cls, conn) -> "Periods":
        return cls.from_rows(
            conn.execute(
                f"SELECT id, day_type, initial_time, end_time FROM {app_table_sql('timeperiod')}"
            ).fetchall(),
            conn.execute(
                f"SELECT id, initial_time, end_time FROM {app_table_sql('halfhourperiod')}"
            ).fetchall(),
        )


def day_types(weekday: pd.Series) -> pd.Series:
    """Monday=0 ... Sunday=6 to Laboral / Sábado / Domingo."""
    return pd.Series(
        np.where(weekday == 6, "Domingo", np.where(weekday == 5, "Sábado", "Laboral")), index=weekday.index
    )


def assign(created_us: pd.Series, periods: Periods, tz: ZoneInfo) -> pd.DataFrame:
    """For instants in µs since the epoch (UTC): local wall-clock time, day type, period
    ids and a problem where no period holds the time (taken to the second). Vectorised."""
    missing = created_us.isna()
    instants = pd.to_datetime(created_us.fillna(0).astype(np.int64), unit="us", utc=True)
    local = instants.dt.tz_convert(tz).dt.tz_localize(None)  # wall clock, unambiguous from UTC
    of_day = ((local - local.dt.floor("D")) // pd.Timedelta(microseconds=1)).astype(np.int64).to_numpy()
    of_day = of_day - of_day % US_PER_SECOND  # to the second: periods end at hh:mm:59
    kind = day_types(local.dt.day_of_week)
    period = np.full(len(local), -1, dtype=np.int64)
    for day_type, (ids, starts, ends) in periods.by_day_type.items():
        mask = (kind == day_type).to_numpy()
        if not mask.any() or not len(ids):
            continue
        pos = np.searchsorted(starts, of_day[mask], side="right") - 1
        inside = (pos >= 0) & (of_day[mask] <= ends[np.clip(pos, 0, None)])
        period[mask] = np.where(inside, ids[np.clip(pos, 0, None)], -1)
    half = periods.half_hour_ids[np.clip(of_day // US_PER_HALF_HOUR, 0, 47)]
    problem = nones(created_us.index)
    no_period = period < 0
    if no_period.any():
        problem[no_period] = [
            f"no {k} time period holds local time {t:%H:%M:%S}"
            for k, t in zip(kind[no_period], local[no_period], strict=True)
        ]
    no_half = (half < 0) & ~no_period
    if no_half.any():
        problem[no_half] = [f"no half-hour period holds local time {t:%H:%M:%S}" for t in local[no_half]]
    if missing.any():
        problem[missing] = "no timeCreation"
    return tidy(
        pd.DataFrame(
            {
                "local_time_creation": local.where(~missing),
                "day_type": kind.astype(object).where(~missing),
                "time_period_id": pd.Series(period, index=created_us.index)
                .astype("Int64")
                .where((period >= 0) & ~missing),
                "half_hour_period_id": pd.Series(half, index=created_us.index)
                .astype("Int64")
                .where((half >= 0) & ~missing),
                "problem": problem,
            },
            index=created_us.index,
        )
    )


_FETCH = 's.id, (extract(epoch FROM s."timeCreation") * 1000000)::int8 AS created_us'
_COLUMNS = ("timePeriod_id", "halfHourPeriod_id")


class EventPeriods(Derivation):
    """Time period and half-hour period of every bus-stop and bus event."""

    name = "event_periods"
    version = "2"  # TranSappViz's columns, periods to the second
    sources = (
        Source(app_table("eventforbusstop"), _COLUMNS, _FETCH),
        Source(app_table("eventforbusv2"), _COLUMNS, _FETCH),
    )

    def __init__(self, timezone: str | None = None):
        self.tz = local_timezone(timezone)

    def reference_digest(self, conn) -> str:
        p = Periods.load(conn)
        text = repr(
            (
                self.version,
                self.tz.key,
                sorted((k, v[0].tolist(), v[1].tolist(), v[2].tolist()) for k, v in p.by_day_type.items()),
                p.half_hour_ids.tolist(),
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def prepare(self, conn) -> Periods:
        return Periods.load(conn)

    def compute(self, conn, ctx: Periods, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        out = assign(rows["created_us"], ctx, self.tz)
        out = out.rename(
            columns={"time_period_id": "timePeriod_id", "half_hour_period_id": "halfHourPeriod_id"}
        )
        return pd.concat([rows[["id"]], out], axis=1)
