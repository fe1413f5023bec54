"""The direction (I/R) of each bus event, from the same phone's latest trip before it.

A trip is a ``token`` (its ``direction``) with the phone's positions along it
(``poseintrajectoryoftoken``). The event's direction is the direction of the token of
the phone's latest pose at or before the event's ``timeCreation``, if that pose is at
most ``ARB_DIRECTION_MAX_GAP_MINUTES`` (default 60) older: a trip that ended hours
before says nothing about the bus the phone reports now. No such pose is no problem
(the user wasn't on a trip): the direction stays empty.

Set-based: per batch, the poses of the batch's phones in the batch's time span come
from one indexed query, and an as-of join (``pandas.merge_asof`` by phone) pairs each
event with its latest pose. A small batch (a window's events, some of them old ones a
vote updated) spans days its events don't need: there each event's pose is one indexed
lookup instead (``latest_direction``, as for reports), same answer. Trips arrive with
complete backups, after the events: events of a phone whose poses or tokens a load
changed are recomputed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from psycopg import sql

from arb_pipeline.postprocess.engine import OUT, TODO, Derivation, Source, tidy
from arb_pipeline.postprocess.tables import app_table, app_table_sql
from arb_pipeline.settings import DIRECTION_MAX_GAP_MINUTES

US_PER_MINUTE = 60_000_000
LOOKUP_ROWS = 5_000  # up to this many events a batch, a lookup per event beats one span query
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def max_gap_minutes(value: int | None = None) -> int:
    """``value``, checked as the ARB_DIRECTION_MAX_GAP_MINUTES setting is; else that setting."""
    if value is None:
        return DIRECTION_MAX_GAP_MINUTES.read()
    return DIRECTION_MAX_GAP_MINUTES.parse_text(str(value))


def latest_trip(events: pd.DataFrame, poses: pd.DataFrame, max_gap_us: int) -> pd.DataFrame:
    """For events (id, phone, created_us) and poses (phone, pose_us, token_id, direction):
    direction, token_id and pose_us of each event's latest pose at or before it, within
    ``max_gap_us``. Ties on a pose time go to the larger token id. Keeps the events' index."""
    ev = events[["phone", "created_us"]].copy()
    ev["row"] = np.arange(len(ev))
    ev["phone"] = ev["phone"].astype(str)
    ev["created_us"] = ev["created_us"].astype(np.int64)
    ps = poses[["phone", "pose_us", "token_id", "direction"]].copy()
    ps["phone"] = ps["phone"].astype(str)
    ps["pose_us"] = ps["pose_us"].astype(np.int64)
    ps = ps.sort_values(["pose_us", "token_id"], kind="stable")
    joined = pd.merge_asof(
        ev.sort_values("created_us", kind="stable"),
        ps,
        left_on="created_us",
        right_on="pose_us",
        by="phone",
        direction="backward",
    )
    joined = joined.sort_values("row")
    close = joined["pose_us"].notna() & (joined["created_us"] - joined["pose_us"] <= max_gap_us)
    out = pd.DataFrame(index=events.index)
    out["token_id"] = pd.array(joined["token_id"].where(close).to_numpy(), dtype="Int64")
    out["pose_us"] = joined["pose_us"].where(close).to_numpy()
    direction = joined["direction"].where(close).to_numpy(dtype=object)
    out["direction"] = [d.strip() or None if isinstance(d, str) else None for d in direction]
    return tidy(out)


_POSE = app_table_sql("poseintrajectoryoftoken")
_TOKEN = app_table_sql("token")

_POSES = f"""
SELECT tk."phoneId"::text AS phone, (extract(epoch FROM p."timeStamp") * 1000000)::int8 AS pose_us,
       p.token_id, tk.direction
FROM {_POSE} p JOIN {_TOKEN} tk ON tk.id = p.token_id
WHERE p."timeStamp" >= %(lo)s AND p."timeStamp" <= %(hi)s
  AND tk."phoneId" = ANY(%(phones)s::uuid[])
"""


def trips_changed(table: str, gap_minutes: int, time_column: str = "timeCreation") -> str:
    """SQL for the rows of ``table`` (bus events, reports) of the phones whose trips a load
    changed (poses, or a token's direction) since the last run, from the first changed
    pose on: trips arrive with complete backups, after the events."""
    return f"""
SELECT e.id FROM (
    SELECT tk."phoneId", min(c.at) AS lo, max(c.at) AS hi
    FROM (SELECT p.token_id, p."timeStamp" AS at FROM {_POSE} p WHERE p.arb_changed_at > %(since)s
          UNION ALL
          SELECT p.token_id, p."timeStamp" FROM {_TOKEN} t JOIN {_POSE} p ON p.token_id = t.id
          WHERE t.arb_changed_at > %(since)s) c
    JOIN {_TOKEN} tk ON tk.id = c.token_id
    GROUP BY tk."phoneId") c
JOIN {app_table_sql(table)} e ON e."phoneId" = c."phoneId" AND e."{time_column}" >= c.lo
 AND e."{time_column}" <= c.hi + make_interval(mins => {int(gap_minutes)})
"""


def latest_direction(phone: str, at: str, gap_minutes: int) -> str:
    """SQL for the direction of the phone's latest pose at or before ``at``, at most
    ``gap_minutes`` older (ties on a pose time: the larger token id), as for events."""
    return (
        f"(SELECT nullif(btrim(tk.direction), '') FROM {_POSE} p JOIN {_TOKEN} tk ON tk.id = p.token_id "
        f'WHERE tk."phoneId" = {phone} AND p."timeStamp" <= {at} '
        f'AND p."timeStamp" >= {at} - make_interval(mins => {int(gap_minutes)}) '
        'ORDER BY p."timeStamp" DESC, p.token_id DESC LIMIT 1)'
    )


class BusEventDirection(Derivation):
    """Direction of every bus event (``eventforbusv2.direction``)."""

    name = "bus_event_direction"
    version = "2"  # TranSappViz's column

    def __init__(self, max_gap: int | None = None):
        self.max_gap = max_gap_minutes(max_gap)
        self.sources = (
            Source(
                app_table("eventforbusv2"),
                ("direction",),
                's.id, s."phoneId"::text AS phone, '
                '(extract(epoch FROM s."timeCreation") * 1000000)::int8 AS created_us',
                extra=(trips_changed("eventforbusv2", self.max_gap),),
            ),
        )

    def reference_digest(self, conn) -> str:
        return f"v{self.version}:max_gap={self.max_gap}"

    def fill(self, conn, ctx, source: Source, bounds: dict) -> None:
        if bounds["rows"] > LOOKUP_ROWS:  # the batch's ids: at least this derivation's
            return super().fill(conn, ctx, source, bounds)
        direction = latest_direction('s."phoneId"', 's."timeCreation"', self.max_gap)
        conn.execute(
            sql.SQL(
                f"INSERT INTO {OUT} (id, direction) SELECT s.id, {direction} FROM {TODO} t "
                "JOIN {src} s ON s.id = t.id WHERE t.id > %(after)s AND t.id <= %(upto)s"
            ).format(src=sql.Identifier(source.table)),
            bounds,
        )

    def compute(self, conn, ctx, source: Source, rows: pd.DataFrame) -> pd.DataFrame:
        gap_us = self.max_gap * US_PER_MINUTE
        lo, hi = int(rows["created_us"].min()) - gap_us, int(rows["created_us"].max())
        cur = conn.execute(
            _POSES,
            {
                "lo": EPOCH + timedelta(microseconds=lo),
                "hi": EPOCH + timedelta(microseconds=hi),
                "phones": sorted(set(rows["phone"])),
            },
        )
        poses = pd.DataFrame(cur.fetchall(), columns=["phone", "pose_us", "token_id", "direction"])
        found = latest_trip(rows, poses, gap_us)
        out = rows[["id"]].copy()
        out["direction"] = found["direction"]
        out["problem"] = None  # no trip is no problem: the user wasn't on one
        return out
