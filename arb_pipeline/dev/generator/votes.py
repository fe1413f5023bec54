"""The vote write pattern, shared by the live workload and the late-committing transaction.

A vote finds the live event (expireTime >= now, not broken, same bus assignment or stop,
same event): if there is one it moves ``timeStamp`` to now, extends ``expireTime`` by the
event's lifespam and bumps a counter; otherwise it creates the event. Either way one
statistics row with the same ``timeStamp`` is inserted. ``now`` is always a parameter
(the app's clock), never SQL now(), because the app server's clock is not the database's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from arb_pipeline.dev.generator.common import GeneratorError, table
from arb_pipeline.pg.quote import quote_ident

KINDS = {
    "bus": ("eventforbusv2", "busassignment_id", "stadisticdatafromregistrationbus"),
    "busStop": ("eventforbusstop", "stopCode", "stadisticdatafromregistrationbusstop"),
}


@dataclass(frozen=True)
class VoteResult:
    """Where a vote landed: the event row (created or updated) and its new stat row."""

    kind: str
    event_row_id: int
    stat_row_id: int
    created: bool
    time_stamp: datetime


@dataclass(frozen=True)
class Vote:
    """One vote's inputs, as the client sends them plus the app's clock reading."""

    kind: str  # "bus" or "busStop"
    target: int | str  # busassignment id, or stop code
    event_id: str
    lifespam: int  # minutes
    confirm: bool
    phone: uuid.UUID
    user_id: int | None
    point: tuple[float, float]  # (longitude, latitude) of the phone
    gps: tuple[float, float, float, float] | None = None  # bus GPS lon, lat, seconds before now, distance


def write_vote(cur: psycopg.Cursor, vote: Vote, now: datetime, *, force_new: bool = False) -> VoteResult:
    """Apply one vote inside the caller's transaction."""
    if vote.kind not in KINDS:
        raise GeneratorError(f"unknown vote kind {vote.kind!r}: use 'bus' or 'busStop'")
    events, target_col, stats = KINDS[vote.kind]
    row = None
    if not force_new:
        cur.execute(
            f"SELECT id FROM {table(events)} WHERE {quote_ident(target_col)} = %s AND event_id = %s "
            f'AND NOT broken AND "expireTime" >= %s ORDER BY "timeStamp" DESC, id DESC LIMIT 1',
            (vote.target, vote.event_id, now),
        )
        row = cur.fetchone()
    # Clients offer "decline" only on an event they were shown, so reporting a new event
    # is always a confirmation: a decline that finds no live event counts as one.
    confirmed = vote.confirm or row is None
    confirm, decline = (1, 0) if confirmed else (0, 1)
    if row:
        event_row_id = row[0]
        cur.execute(
            f'UPDATE {table(events)} SET "timeStamp" = %s, '
            f'"expireTime" = "expireTime" + make_interval(mins => %s), '
            f'"eventConfirm" = "eventConfirm" + %s, "eventDecline" = "eventDecline" + %s WHERE id = %s',
            (now, vote.lifespam, confirm, decline, event_row_id),
        )
    else:
        # Every NOT NULL column, as the app writes it: Django's model defaults are not
        # database defaults, so a table Django created has none (aditionalInfo's "nothing").
        extra = {"aditionalInfo": "nothing"} if vote.kind == "busStop" else {}
        cols = ("timeStamp", "timeCreation", "expireTime", "event_id", "eventConfirm", "eventDecline")
        cols += ("phoneId", "broken", target_col, *extra)
        cur.execute(
            f"INSERT INTO {table(events)} ({', '.join(quote_ident(c) for c in cols)}) "
            f"VALUES ({', '.join(['%s'] * len(cols))}) RETURNING id",
            (
                now,
                now,
                now + timedelta(minutes=vote.lifespam),
                vote.event_id,
                confirm,
                decline,
                vote.phone,
                False,
                vote.target,
                *extra.values(),
            ),
        )
        event_row_id = cur.fetchone()[0]
    values = {
        "longitude": vote.point[0],
        "latitude": vote.point[1],
        "timeStamp": now,
        "confirmDecline": "confirm" if confirmed else "decline",
        "phoneId": vote.phone,
        "reportOfEvent_id": event_row_id,
        "tranSappUser_id": vote.user_id,
    }
    if vote.kind == "bus":
        gps = vote.gps
        values.update(
            {
                "gpsLongitude": gps[0] if gps else None,
                "gpsLatitude": gps[1] if gps else None,
                "gpsTimeStamp": now - timedelta(seconds=gps[2]) if gps else None,
                "distance": gps[3] if gps else None,
            }
        )
    cols = ", ".join(quote_ident(c) for c in values)
    cur.execute(
        f"INSERT INTO {table(stats)} ({cols}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
        list(values.values()),
    )
    return VoteResult(vote.kind, event_row_id, cur.fetchone()[0], row is None, now)


class LateVote:
    """A vote whose transaction stays open until ``commit()``: its rows carry a timeStamp
    that is already old when other sessions first see them.

    Holds its own connection. Always creates a new event (never updates one) so the open
    transaction holds no lock that the rest of the traffic would wait on for minutes.
    Used as a context manager it commits on a clean exit and rolls back on an error.
    """

    def __init__(self, conn: psycopg.Connection, vote: Vote, now: datetime):
        self.conn = conn
        self.vote = vote
        self.started = time.monotonic()
        with conn.cursor() as cur:
            self.result = write_vote(cur, vote, now, force_new=True)
        self.done = False

    @property
    def time_stamp(self) -> datetime:
        return self.result.time_stamp

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started

    def commit(self) -> VoteResult:
        self.conn.commit()
        self._close()
        return self.result

    def rollback(self) -> None:
        self.conn.rollback()
        self._close()

    def _close(self) -> None:
        self.done = True
        self.conn.close()

    def __enter__(self) -> "LateVote":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
