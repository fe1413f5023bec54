"""Live TranSapp traffic against a sender database: votes, reports, trips, telemetry, purges.

Every operation runs in its own transaction, as one app request does, and takes its
timestamps from the app's clock (``app_now()``: the local clock plus ``clock_offset``),
passed as parameters the way Django's timezone.now() values are. ``step()`` draws the
operation and all its inputs from one seeded ``random.Random`` before touching the
database, so the same seed replays the same sequence of operations.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arb_pipeline.dev.generator import reports
from arb_pipeline.dev.generator.common import GeneratorError, jitter, rng_point, rng_uuid, table
from arb_pipeline.dev.generator.votes import LateVote, Vote, VoteResult, write_vote
from arb_pipeline.pg.connect import connect

# Relative frequency of each operation in step().
DEFAULT_WEIGHTS = {
    "vote_bus": 30,
    "vote_stop": 20,
    "report": 8,
    "trip": 12,
    "device_position": 15,
    "nearby_buses": 10,
    "purge_active_tokens": 3,
    "mark_declined_broken": 2,
}
ACTIVE_TOKEN_TTL = timedelta(minutes=10)
IMAGE_SHARE = 0.4  # share of reports that carry an image
DECLINE_SHARE = 0.35  # share of votes that decline (enough for some events to break)


@dataclass(frozen=True)
class Op:
    """One drawn operation: its name and the inputs it was called with."""

    name: str
    params: dict = field(hash=False)


class Workload:
    """Drives the app's write patterns on one sender database.

    Reads the reference data once (ordered by id, so draws are reproducible); run
    ``seed_reference`` first. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        dsn: str,
        media_dir: str | Path,
        seed: int,
        *,
        clock_offset: timedelta = timedelta(0),
        weights: dict[str, int] | None = None,
        hot_targets: int = 20,
    ):
        self.dsn = dsn
        self.media_dir = Path(media_dir)
        self.clock_offset = clock_offset
        self.rng = random.Random(f"workload:{seed}")
        self._late_rng = random.Random(f"late:{seed}")
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise GeneratorError(
                f"unknown operation(s) in weights: {', '.join(sorted(unknown))}; "
                f"use {', '.join(DEFAULT_WEIGHTS)}"
            )
        self.conn = connect(dsn, application_name="arb_generator")
        try:
            self._load_reference(hot_targets)
        except BaseException:
            self.conn.close()
            raise

    # -- setup -----------------------------------------------------------------------------

    def _load_reference(self, hot: int) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(f'SELECT id, "eventType", lifespam FROM {table("event")} ORDER BY id')
            self.events = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
            # Stops of the newest seeded GTFS version, as the app serves.
            cur.execute(f"SELECT id FROM {table('gtfs')} ORDER BY id DESC LIMIT 1")
            gtfs = cur.fetchone()
            cur.execute(
                f"SELECT id, code, name, longitude, latitude FROM {table('busstop')} "
                f"WHERE gtfs_id = %s ORDER BY id",
                (gtfs[0] if gtfs else None,),
            )
            self.stops = [dict(id=r[0], code=r[1], name=r[2], lon=r[3], lat=r[4]) for r in cur.fetchall()]
            cur.execute(
                f'SELECT a.id, a.service, b."registrationPlate", b.uuid FROM {table("busassignment")} a '
                f"JOIN {table('busv2')} b ON b.id = a.uuid_id ORDER BY a.id"
            )
            self.assignments = [
                dict(id=r[0], service=r[1], plate=r[2], uuid=str(r[3])) for r in cur.fetchall()
            ]
            cur.execute(f'SELECT id, "phoneId" FROM {table("transappuser")} ORDER BY id')
            users = cur.fetchall()
        if not (self.events and self.stops and self.assignments):
            raise GeneratorError(
                "the sender database has no reference data (events, bus stops, buses): "
                "run `arb generate seed` on it first"
            )
        rng = self.rng
        self.phones = [(uid, phone) for uid, phone in users] + [(None, rng_uuid(rng)) for _ in range(200)]
        by_type = {t: sorted(e for e, (et, _) in self.events.items() if et == t) for t in ("bus", "busStop")}
        self.event_ids = by_type
        self.hot_events = {t: rng.sample(ids, min(3, len(ids))) for t, ids in by_type.items()}
        self.hot_assignments = rng.sample(self.assignments, min(hot, len(self.assignments)))
        self.hot_stops = rng.sample(self.stops, min(hot, len(self.stops)))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Workload":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def app_now(self) -> datetime:
        """The app server's clock: the local clock shifted by ``clock_offset``."""
        return datetime.now(UTC) + self.clock_offset

    # -- operations (each one transaction) ---------------------------------------------------

    def vote(self, vote: Vote) -> VoteResult:
        """Confirm or decline an event on a bus or a stop (updates a live event, else creates one)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            return write_vote(cur, vote, self.app_now())

    def report(
        self, *, message: str, report_info: str, phone: uuid.UUID, image: tuple[str, bytes] | None = None
    ) -> int:
        """Insert a report; with an image, save it as ``<id>_<HH-MM-SS_YYYY-MM-DD>.<ext>``."""
        now = self.app_now()
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                f'INSERT INTO {table("report")} ("timeStamp", message, "imageName", "reportInfo", "phoneId") '
                f"VALUES (%s, %s, NULL, %s, %s) RETURNING id",
                (now, message, report_info, phone),
            )
            report_id = cur.fetchone()[0]
            if image:
                name = reports.image_name(report_id, now, image[0])
                reports.write_image(self.media_dir, name, image[1])
                cur.execute(f'UPDATE {table("report")} SET "imageName" = %s WHERE id = %s', (name, report_id))
        return report_id

    def trip(
        self,
        *,
        assignment_id: int,
        token: str,
        direction: str | None,
        color: str,
        phone: uuid.UUID,
        user_id: int | None,
        poses: list[tuple[float, float, str]],
        pose_interval_s: float,
    ) -> int:
        """A trip: the token, its poses (the last one at now) and its active-token row."""
        now = self.app_now()
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                f'INSERT INTO {table("token")} (token, busassignment_id, direction, color, "phoneId", '
                '"timeCreation", "userEvaluation", "tranSappUser_id") VALUES (%s, %s, %s, %s, %s, %s, NULL, '
                f"%s) RETURNING id",
                (token, assignment_id, direction, color, phone, now, user_id),
            )
            token_id = cur.fetchone()[0]
            last = len(poses) - 1
            cur.executemany(
                f'INSERT INTO {table("poseintrajectoryoftoken")} (longitude, latitude, "timeStamp", '
                '"inVehicleOrNot", token_id) VALUES (%s, %s, %s, %s, %s)',
                [
                    (lon, lat, now - timedelta(seconds=pose_interval_s * (last - k)), flag, token_id)
                    for k, (lon, lat, flag) in enumerate(poses)
                ],
            )
            cur.execute(
                f'INSERT INTO {table("activetoken")} ("timeStamp", token_id) VALUES (%s, %s)', (now, token_id)
            )
        return token_id

    def device_position(self, *, phone: uuid.UUID, point: tuple[float, float]) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f'INSERT INTO {table("devicepositionintime")} (longitude, latitude, "timeStamp", '
                f'"phoneId") VALUES (%s, %s, %s, %s)',
                (*point, self.app_now(), phone),
            )

    def nearby_buses(self, *, phone: uuid.UUID, stop_id: int) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f'INSERT INTO {table("nearbybuseslog")} ("timeStamp", "busStop_id", "phoneId") '
                f"VALUES (%s, %s, %s)",
                (self.app_now(), stop_id, phone),
            )

    def purge_active_tokens(self) -> int:
        """The app's cron: DELETE active tokens older than 10 minutes (by the app's clock)."""
        with self.conn.transaction():
            cur = self.conn.execute(
                f'DELETE FROM {table("activetoken")} WHERE "timeStamp" < %s',
                (self.app_now() - ACTIVE_TOKEN_TTL,),
            )
            return cur.rowcount

    def mark_declined_broken(self) -> int:
        """The app's cron: bulk-mark events with more declines than confirms as broken.

        Deliberately leaves ``timeStamp`` alone, as the app does: such changes reach the
        receiver only through a complete backup.
        """
        changed = 0
        with self.conn.transaction():
            for events in ("eventforbusv2", "eventforbusstop"):
                cur = self.conn.execute(
                    f'UPDATE {table(events)} SET broken = true, "brokenType" = %s '
                    f'WHERE NOT broken AND "eventDecline" > "eventConfirm"',
                    ("decline",),
                )
                changed += cur.rowcount
        return changed

    def late_vote(self, kind: str | None = None) -> LateVote:
        """Begin a vote in its own transaction and return it uncommitted; the caller commits.

        Its rows carry ``timeStamp = app_now()`` of now but become visible only at commit,
        like a slow request. Draws from a separate generator so the main sequence is unchanged.
        """
        vote = self._draw_vote(self._late_rng, kind or self._late_rng.choice(("bus", "busStop")))
        conn = connect(self.dsn, application_name="arb_generator_late")
        try:
            return LateVote(conn, vote, self.app_now())
        except BaseException:
            conn.close()
            raise

    # -- drawing ---------------------------------------------------------------------------

    def _phone(self, rng: random.Random) -> tuple[int | None, uuid.UUID]:
        return rng.choice(self.phones)

    def _draw_vote(self, rng: random.Random, kind: str) -> Vote:
        if kind == "bus":
            target_row = rng.choice(self.hot_assignments if rng.random() < 0.8 else self.assignments)
            target = target_row["id"]
            where = rng.choice(self.stops)
        else:
            where = rng.choice(self.hot_stops if rng.random() < 0.8 else self.stops)
            target = where["code"]
        event_id = rng.choice(self.hot_events[kind] if rng.random() < 0.7 else self.event_ids[kind])
        user_id, phone = self._phone(rng)
        point = jitter(rng, where["lon"], where["lat"], 80)
        gps = None
        if kind == "bus" and rng.random() < 0.7:
            glon, glat = jitter(rng, *point, 40)
            gps = (glon, glat, round(rng.uniform(0, 30), 3), round(rng.uniform(0, 60), 2))
        return Vote(
            kind,
            target,
            event_id,
            self.events[event_id][1],
            rng.random() >= DECLINE_SHARE,
            phone,
            user_id,
            point,
            gps,
        )

    def _draw(self, name: str) -> dict:
        rng = self.rng
        if name in ("vote_bus", "vote_stop"):
            return {"vote": self._draw_vote(rng, "bus" if name == "vote_bus" else "busStop")}
        if name == "report":
            user_point = rng_point(rng)
            if rng.random() < 0.6:
                info = reports.report_info(rng, user_point=user_point, bus=rng.choice(self.assignments))
            else:
                info = reports.report_info(rng, user_point=user_point, stop=rng.choice(self.stops))
            image = reports.image_choice(rng) if rng.random() < IMAGE_SHARE else None
            return {
                "message": reports.message(rng),
                "report_info": info,
                "phone": self._phone(rng)[1],
                "image": image,
            }
        if name == "trip":
            user_id, phone = self._phone(rng)
            lon, lat = rng_point(rng)
            poses = []
            for _ in range(rng.randint(3, 12)):
                poses.append((lon, lat, "vehicle" if rng.random() < 0.8 else "non_vehicle"))
                lon, lat = jitter(rng, lon, lat, 120)
            return {
                "assignment_id": rng.choice(self.assignments)["id"],
                "token": rng.randbytes(64).hex(),
                "direction": rng.choice(("I", "R", "I", "R", None)),
                "color": f"#{rng.getrandbits(24):06x}",
                "phone": phone,
                "user_id": user_id,
                "poses": poses,
                "pose_interval_s": rng.choice((5, 10, 15)),
            }
        if name == "device_position":
            return {"phone": self._phone(rng)[1], "point": rng_point(rng)}
        if name == "nearby_buses":
            return {"phone": self._phone(rng)[1], "stop_id": rng.choice(self.stops)["id"]}
        return {}

    def draw(self) -> Op:
        """Draw the next operation and its inputs without running it."""
        names = list(self.weights)
        name = self.rng.choices(names, weights=[self.weights[n] for n in names])[0]
        return Op(name, self._draw(name))

    def execute(self, op: Op):
        """Run a drawn operation; returns what the operation returns."""
        if op.name in ("vote_bus", "vote_stop"):
            return self.vote(**op.params)
        return getattr(self, op.name)(**op.params)

    def step(self) -> Op:
        """Draw one weighted random operation and run it in its own transaction."""
        op = self.draw()
        self.execute(op)
        return op

    def run(
        self,
        rate_per_s: float,
        *,
        duration_s: float | None = None,
        count: int | None = None,
        late_commit_after: timedelta | None = None,
    ) -> Counter:
        """Run steps at ``rate_per_s`` until ``duration_s`` passes or ``count`` steps ran.

        With ``late_commit_after``, one late vote is always open: each is committed once it
        is that old, and the next begins; the last one is waited for before returning.
        Returns how many of each operation ran (late commits counted as ``late_vote``).
        """
        if rate_per_s <= 0:
            raise GeneratorError(
                f"rate must be positive, got {rate_per_s}: pass --rate as operations per second"
            )
        if duration_s is None and count is None:
            raise GeneratorError("run needs a duration or a count of steps: pass --duration")
        done: Counter = Counter()
        start = time.monotonic()
        pending = self.late_vote() if late_commit_after else None
        i = 0
        try:
            while (count is None or i < count) and (
                duration_s is None or time.monotonic() - start < duration_s
            ):
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                done[self.step().name] += 1
                i += 1
                if pending and pending.age_s >= late_commit_after.total_seconds():
                    pending.commit()
                    done["late_vote"] += 1
                    pending = self.late_vote()
            if pending:
                time.sleep(max(0.0, late_commit_after.total_seconds() - pending.age_s))
                pending.commit()
                done["late_vote"] += 1
                pending = None
        finally:
            if pending and not pending.done:
                pending.rollback()
        return done
