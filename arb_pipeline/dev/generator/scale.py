"""Bulk volume for benchmarks: grow a sender database to N GB, or fill one 5-minute window.

All set-based (INSERT ... SELECT over generate_series), so PostgreSQL does the work
without a row crossing the wire; only parent ids (tokens, events) are taken up front, from
the sequences, so children can reference them. Timestamps advance with the series, which
keeps every timeStamp index append-only and the load fast. Rows keep the app's
invariants: each event's timeStamp is its newest stat's, tokens own consecutive poses.
Values come from random() after setseed(), so a run is repeatable on an empty database.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from arb_pipeline.dev.generator.common import (
    LAT_MAX,
    LAT_MIN,
    LON_MAX,
    LON_MIN,
    GeneratorError,
    table,
    take_ids,
)
from arb_pipeline.pg.connect import connect

POSES_PER_TOKEN = 40
BYTES_PER_POSE_GUESS = 400  # bytes a batch adds per pose (all its tables and indexes); then measured
MIN_BATCH_POSES = 10_000

_LON = f"({LON_MIN} + {LON_MAX - LON_MIN} * random())"
_LAT = f"({LAT_MIN} + {LAT_MAX - LAT_MIN} * random())"
# Integer parameters are cast to bigint: psycopg sends small Python ints as smallint,
# and products such as n * k would overflow it.
_PHONE = "md5((g %% 5000)::text)::uuid"  # inside parameterized SQL


@dataclass(frozen=True)
class ScaleResult:
    """What build_scale did: sizes in bytes, rows per table, seconds taken."""

    start_bytes: int
    end_bytes: int
    rows: dict[str, int]
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return (self.end_bytes - self.start_bytes) / 1e6 / self.seconds if self.seconds else 0.0


def database_size(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def _reference_ids(cur: psycopg.Cursor) -> tuple[list[int], list[str], list[str], list[str]]:
    cur.execute(f"SELECT id FROM {table('busassignment')} ORDER BY id")
    assignments = [r[0] for r in cur.fetchall()]
    cur.execute(f"SELECT code FROM {table('busstop')} ORDER BY id")
    stops = list(dict.fromkeys(r[0] for r in cur.fetchall()))
    cur.execute(f'SELECT id, "eventType" FROM {table("event")} ORDER BY id')
    events = cur.fetchall()
    bus_events = [e for e, t in events if t == "bus"]
    stop_events = [e for e, t in events if t == "busStop"]
    if not (assignments and stops and bus_events and stop_events):
        raise GeneratorError(
            "the sender database has no reference data (buses, bus stops, events): "
            "run `arb generate seed` on it first"
        )
    return assignments, stops, bus_events, stop_events


def _insert_events(
    cur,
    kind: str,
    n: int,
    start: datetime,
    step_us: float,
    refs,
    *,
    created_back_s: int,
    stats_per_event: int,
) -> dict[str, int]:
    """n events of one kind with timeStamp = start + g*step, each with its stats.

    A stat's timeStamp steps back 90 s per earlier vote, and the newest one equals the
    event's timeStamp, as the vote pattern guarantees. timeCreation lies up to
    ``created_back_s`` before the first vote (events updated by later votes).
    """
    assignments, stops, bus_events, stop_events = refs
    if kind == "bus":
        events_t, stats_t, target_col = (
            "eventforbusv2",
            "stadisticdatafromregistrationbus",
            "busassignment_id",
        )
        targets, target_type, ev = assignments, "int", bus_events
    else:
        events_t, stats_t, target_col = (
            "eventforbusstop",
            "stadisticdatafromregistrationbusstop",
            '"stopCode"',
        )
        targets, target_type, ev = stops, "text", stop_events
    params = {
        "ids": take_ids(cur, events_t, n),
        "n": n,
        "start": start,
        "step": timedelta(microseconds=step_us),
        "targets": targets,
        "nt": len(targets),
        "ev": ev,
        "nev": len(ev),
        "back": created_back_s,
        "k": stats_per_event,
    }
    cur.execute(
        f'INSERT INTO {table(events_t)} (id, "timeStamp", "timeCreation", "expireTime", event_id, '
        f'"eventConfirm", "eventDecline", "phoneId", broken, "brokenType", {target_col}) '
        f"SELECT (%(ids)s::int[])[1 + g], ts, "
        f"ts - make_interval(secs => 90 * (%(k)s::bigint - 1) + (g %% 4) * %(back)s::bigint / 3), "
        f"ts + interval '30 min', (%(ev)s::text[])[1 + g %% %(nev)s::bigint], 1 + g %% 5, "
        f"CASE WHEN g %% 50 = 0 THEN 9 ELSE g %% 3 END, {_PHONE}, g %% 50 = 0, "
        f"CASE WHEN g %% 50 = 0 THEN 'decline' END, t.target "
        f"FROM (SELECT g, %(start)s::timestamptz + g * %(step)s::interval AS ts "
        f"      FROM generate_series(0, %(n)s::bigint - 1) g) s "
        # A join, not targets[i]: subscripting a text array walks it from the start.
        f"JOIN unnest(%(targets)s::{target_type}[]) WITH ORDINALITY AS t(target, i) "
        f"ON t.i = 1 + (s.g * 7919) %% %(nt)s::bigint",
        params,
    )
    gps_cols = gps = ""
    if kind == "bus":  # a third of the bus stats have no GPS fix
        gps_cols = ', "gpsLongitude", "gpsLatitude", "gpsTimeStamp", distance'
        gps = (
            f", CASE WHEN j %% 3 > 0 THEN {_LON} END, CASE WHEN j %% 3 > 0 THEN {_LAT} END, "
            f"CASE WHEN j %% 3 > 0 THEN ts - interval '7 s' END, CASE WHEN j %% 3 > 0 THEN 60 * random() END"
        )
    cur.execute(
        f'INSERT INTO {table(stats_t)} (longitude, latitude, "timeStamp", "confirmDecline", "phoneId", '
        f'"reportOfEvent_id", "tranSappUser_id"{gps_cols}) '
        f"SELECT {_LON}, {_LAT}, ts, CASE WHEN j %% 4 = 3 THEN 'decline' ELSE 'confirm' END, "
        f"{_PHONE}, (%(ids)s::int[])[1 + g], NULL{gps} "
        f"FROM (SELECT j, g, %(start)s::timestamptz + g * %(step)s::interval "
        f"        - make_interval(secs => 90 * (%(k)s::bigint - 1 - j %% %(k)s::bigint)) AS ts "
        f"      FROM (SELECT j, j / %(k)s::bigint AS g "
        f"            FROM generate_series(0, %(n)s::bigint * %(k)s::bigint - 1) j) q) s",
        params,
    )
    return {events_t: n, stats_t: n * stats_per_event}


def _insert_trips(
    cur, n_poses: int, start: datetime, step_us: float, assignments: list[int]
) -> dict[str, int]:
    """Tokens with POSES_PER_TOKEN consecutive poses each."""
    n_tokens = max(1, n_poses // POSES_PER_TOKEN)
    n_poses = n_tokens * POSES_PER_TOKEN
    params = {
        "ids": take_ids(cur, "token", n_tokens),
        "nt": n_tokens,
        "np": n_poses,
        "start": start,
        "step": timedelta(microseconds=step_us),
        "tstep": timedelta(microseconds=POSES_PER_TOKEN * step_us),
        "per": POSES_PER_TOKEN,
        "ba": assignments,
        "nba": len(assignments),
    }
    cur.execute(
        f'INSERT INTO {table("token")} (id, token, busassignment_id, direction, color, "phoneId", '
        f'"timeCreation", "userEvaluation", "tranSappUser_id") '
        f"SELECT id, encode(sha512(int8send(id)), 'hex'), (%(ba)s::int[])[1 + g %% %(nba)s::bigint], "
        f"(ARRAY['I', 'R', NULL])[1 + g %% 3], '#00a0f0', {_PHONE}, "
        f"%(start)s::timestamptz + g * %(tstep)s::interval, NULL, NULL "
        f"FROM (SELECT g, (%(ids)s::int[])[1 + g] AS id FROM generate_series(0, %(nt)s::bigint - 1) g) s",
        params,
    )
    cur.execute(
        f'INSERT INTO {table("poseintrajectoryoftoken")} (longitude, latitude, "timeStamp", '
        '"inVehicleOrNot", token_id) '
        f"SELECT {_LON}, {_LAT}, %(start)s::timestamptz + g * %(step)s::interval, "
        "CASE WHEN random() < 0.8 THEN 'vehicle' ELSE 'non_vehicle' END, (%(ids)s::int[])[1 + g / "
        f"%(per)s::bigint] FROM generate_series(0, %(np)s::bigint - 1) g",
        params,
    )
    return {"token": n_tokens, "poseintrajectoryoftoken": n_poses}


def _insert_positions_and_events(cur, n_poses: int, start: datetime, step_us: float, refs) -> dict[str, int]:
    """Device positions (half as many as poses) and events with two stats each (a twentieth)."""
    n_dev = n_poses // 2
    cur.execute(
        f'INSERT INTO {table("devicepositionintime")} (longitude, latitude, "timeStamp", "phoneId") '
        f"SELECT {_LON}, {_LAT}, %(start)s::timestamptz + g * %(dstep)s::interval, {_PHONE} "
        f"FROM generate_series(0, %(nd)s::bigint - 1) g",
        {"nd": n_dev, "start": start, "dstep": timedelta(microseconds=2 * step_us)},
    )
    written = {"devicepositionintime": n_dev}
    n_ev = max(2, n_poses // 20)
    for kind, share in (("bus", 0.6), ("busStop", 0.4)):
        k_ev = max(1, int(n_ev * share))
        written.update(
            _insert_events(
                cur, kind, k_ev, start, step_us * n_poses / k_ev, refs, created_back_s=1800, stats_per_event=2
            )
        )
    return written


def _second_connection(conn: psycopg.Connection) -> psycopg.Connection:
    """Another session on the same database, to load a second stream of tables in parallel."""
    params = conninfo_to_dict(conn.info.dsn)
    if conn.info.password:
        params["password"] = conn.info.password
    return connect(make_conninfo(**params), application_name="arb_generator_scale")


def build_scale(
    conn: psycopg.Connection,
    gigabytes: float,
    *,
    end: datetime | None = None,
    span_days: float = 60,
    batch_poses: int = 1_000_000,
    seed: float = 0.42,
    parallel: bool = True,
    progress=None,
) -> ScaleResult:
    """Add telemetry, events and stats until pg_database_size reaches ``gigabytes`` (1 GB = 10^9 bytes).

    Data is historical: timestamps run forward over ``span_days`` ending at ``end``
    (default: one hour ago), batch after batch, each batch its own transactions so
    progress survives an interrupt. Does nothing when the database is already that big.
    Each batch loads trips on ``conn`` and, at the same time, device positions and events
    on a second session: index upkeep is CPU-bound, and two sessions use two cores.
    ``progress(bytes_now, target_bytes)`` is called after each batch.
    """
    if gigabytes <= 0:
        raise GeneratorError(f"--gigabytes must be positive, got {gigabytes}")
    target = int(gigabytes * 1e9)
    end = end or datetime.now(UTC) - timedelta(hours=1)
    began = time.monotonic()
    size0 = size = database_size(conn)
    rows: dict[str, int] = {}
    per_pose = float(BYTES_PER_POSE_GUESS)
    poses_done = 0
    cursor = end - timedelta(days=span_days)
    if size >= target:
        return ScaleResult(size0, size, rows, 0.0)
    with conn.transaction(), conn.cursor() as cur:
        refs = _reference_ids(cur)
    other = _second_connection(conn)
    try:
        for session, s in ((conn, seed), (other, seed / 2)):
            session.execute("SELECT setseed(%s)", (s,))
            session.commit()
        with ThreadPoolExecutor(1) as pool:
            while size < target:
                remaining = target - size
                n = min(batch_poses, max(MIN_BATCH_POSES, math.ceil(remaining / per_pose)))
                batch_span = (end - cursor) / max(1, math.ceil(remaining / per_pose / batch_poses))
                step_us = batch_span / timedelta(microseconds=1) / n
                side_args = (other, _insert_positions_and_events, n, cursor, step_us, refs)
                side = pool.submit(_in_transaction, *side_args) if parallel else None
                done = _in_transaction(conn, _insert_trips, n, cursor, step_us, refs[0])
                done.update(side.result() if side else _in_transaction(*side_args))
                for t, k in done.items():
                    rows[t] = rows.get(t, 0) + k
                cursor += batch_span
                new_size = database_size(conn)
                poses_done += done["poseintrajectoryoftoken"]
                size = new_size
                # Average over all batches so far: a small batch may fill free space and add nothing.
                per_pose = max(50.0, (size - size0) / poses_done)
                if progress:
                    progress(size, target)
    finally:
        other.close()
    return ScaleResult(size0, size, rows, time.monotonic() - began)


def _in_transaction(conn: psycopg.Connection, fn, *args) -> dict[str, int]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = off")
        _skip_fk_checks(conn)
        return fn(cur, *args)


def _skip_fk_checks(conn: psycopg.Connection) -> bool:
    """Skip the per-row foreign-key triggers for this transaction, when the role may.

    The rows reference ids read from their parents, so the checks can't fail; at commit
    they cost as much as the inserts themselves. ``session_replication_role`` needs a
    superuser: without one the checks simply run.
    """
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def build_event_window(
    conn: psycopg.Connection, start: datetime, *, rows: int = 100_000, minutes: float = 5
) -> dict[str, int]:
    """Fill one window [start, start + minutes) with about ``rows`` event and stat rows.

    Split 30/30/20/20 between bus events, bus stats, stop events and stop stats; each
    event has one stat at its timeStamp, and a third of the events were created before
    the window (updated by a vote inside it), the case an extractor must not miss.
    """
    if start.tzinfo is None:
        raise GeneratorError(
            f"window start {start} has no time zone: give it as UTC, e.g. 2024-05-01T12:00:00+00:00"
        )
    if rows < 4:
        raise GeneratorError(f"an event window needs at least 4 rows, got {rows}")
    window_us = minutes * 60e6
    written: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        _skip_fk_checks(conn)
        refs = _reference_ids(cur)
        for kind, share in (("bus", 0.3), ("busStop", 0.2)):
            n = max(1, int(rows * share))
            written.update(
                _insert_events(
                    cur, kind, n, start, window_us / n, refs, created_back_s=1200, stats_per_event=1
                )
            )
    return written
