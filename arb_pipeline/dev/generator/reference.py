"""Seed the reference data of one GTFS version, plus buses, users and the fixed catalogues.

Everything is drawn from ``random.Random(f"{seed}:{version}")`` and written with COPY,
ids taken from the tables' sequences, so the same seed on an empty database gives identical rows
(ids included), and the volumes match a real TranSapp sender (about 11.3k stops, 380
services per version) unless ``scale`` shrinks them for tests.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import psycopg

from arb_pipeline.dev.generator.common import (
    GeneratorError,
    copy_rows,
    jitter,
    rng_point,
    rng_uuid,
    table,
    take_ids,
)
from arb_pipeline.dev.generator.vocab import (
    COMUNAS,
    EVENTS,
    FIRST_NAMES,
    LAST_NAMES,
    LEVELS,
    MAIL_DOMAINS,
    STREETS,
)
from arb_pipeline.postprocess.tables import app_table

# Reference timestamps are drawn after this instant, never from the wall clock, so that
# two runs with the same seed write the same rows.
REFERENCE_EPOCH = datetime(2017, 1, 2, 12, 0, tzinfo=UTC)

PLATE_LETTERS = "BCDFGHJKLPRSTVWXYZ"
STOP_PREFIXES = "ABCDEFGHIJ"


@dataclass(frozen=True)
class ReferenceCounts:
    """Row counts of one seeding; the defaults are a real GTFS version's volumes."""

    stops: int = 11_300
    services: int = 380
    services_by_stop: int = 11_300
    stop_distances: int = 34_600
    route_points: int = 27_000
    buses: int = 3_000
    users: int = 500

    def scaled(self, factor: float) -> "ReferenceCounts":
        """The same proportions times ``factor`` (at least a handful of each, so tests work)."""
        minimum = {
            "stops": 20,
            "services": 4,
            "services_by_stop": 8,
            "stop_distances": 8,
            "route_points": 8,
            "buses": 10,
            "users": 5,
        }
        return ReferenceCounts(
            **{f.name: max(minimum[f.name], round(getattr(self, f.name) * factor)) for f in fields(self)}
        )


def seed_reference(
    conn: psycopg.Connection,
    seed: int,
    *,
    gtfs_version: str = "v1.3",
    scale: float = 1.0,
    counts: ReferenceCounts | None = None,
) -> dict[str, int]:
    """Write one GTFS version's reference data and the buses, users and catalogues.

    Runs in one transaction on ``conn`` (committed at the end unless the caller already
    had one open). Events, levels and score events are global: they are written only when
    their table is empty, so a second version can be seeded into the same database.
    Returns the number of rows written per table.
    """
    counts = counts or ReferenceCounts().scaled(scale)
    if len(gtfs_version) > 10:
        raise GeneratorError(
            f"GTFS version {gtfs_version!r} is longer than 10 characters: use a short one like v1.3"
        )
    rng = random.Random(f"{seed}:{gtfs_version}")
    written: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {table('gtfs')} WHERE version = %s", (gtfs_version,))
        if cur.fetchone():
            raise GeneratorError(
                f"GTFS version {gtfs_version!r} is already seeded in this database: "
                "seed a fresh database or pass another --gtfs-version"
            )
        written["event"] = _seed_catalogues(cur, written)
        gtfs_id = take_ids(cur, "gtfs", 1)[0]
        when = REFERENCE_EPOCH + timedelta(seconds=rng.randrange(86400 * 30))
        written["gtfs"] = copy_rows(
            cur, "gtfs", ("id", "version", "timeCreation"), [(gtfs_id, gtfs_version, when)]
        )
        stops = _seed_stops(cur, rng, gtfs_id, counts.stops, written)
        services = _seed_services(cur, rng, gtfs_id, counts.services, written)
        _seed_lines(cur, rng, gtfs_id, stops, services, counts, written)
        _seed_buses(cur, rng, [code for _, code in services], counts.buses, written)
        _seed_users(cur, rng, counts.users, written)
    return written


def _seed_catalogues(cur: psycopg.Cursor, written: dict[str, int]) -> int:
    """Events, levels and score events: fixed rows, written once per database."""
    cur.execute(f"SELECT count(*) FROM {table('event')}")
    if cur.fetchone()[0]:
        return 0
    events = [
        (f"evn{i:05d}", name, desc, life, cat, origin, etype)
        for i, (name, cat, origin, etype, life, desc) in enumerate(EVENTS)
    ]
    n = copy_rows(
        cur, "event", ("id", "name", "description", "lifespam", "category", "origin", "eventType"), events
    )
    ids = take_ids(cur, "level", len(LEVELS))
    written["level"] = copy_rows(
        cur,
        "level",
        ("id", "name", "minScore", "maxScore", "position"),
        [(ids[i], name, lo, hi, i + 1) for i, (name, lo, hi) in enumerate(LEVELS)],
    )
    codes = [(e[0], 100.0 if e[6] == "bus" else 50.0) for e in events]
    codes += [("tok00000", 200.0), ("rep00000", 80.0), ("rep00001", 120.0)]
    ids = take_ids(cur, "scoreevent", len(codes))
    written["scoreevent"] = copy_rows(
        cur,
        "scoreevent",
        ("id", "code", "score"),
        [(ids[i], code, score) for i, (code, score) in enumerate(codes)],
    )
    return n


def _seed_stops(cur, rng, gtfs_id, n, written) -> list[tuple[int, str, float, float]]:
    """Bus stops with codes like PA443 (P, a zone letter, a number), inside the box."""
    numbers = rng.sample(range(len(STOP_PREFIXES) * 4000), n)
    ids = take_ids(cur, "busstop", n)
    stops, rows = [], []
    for i, k in enumerate(numbers):
        code = f"P{STOP_PREFIXES[k // 4000]}{k % 4000 + 1}"
        lon, lat = rng_point(rng)
        name = f"{code}-Parada {rng.randint(1, 9)} / {rng.choice(STREETS)} esq. {rng.choice(STREETS)}"[:70]
        stops.append((ids[i], code, lon, lat))
        rows.append((ids[i], lon, lat, code, name, gtfs_id))
    written["busstop"] = copy_rows(
        cur, "busstop", ("id", "longitude", "latitude", "code", "name", "gtfs_id"), rows
    )
    return stops


def _service_codes(rng: random.Random, n: int) -> list[str]:
    """Transantiago-like service codes: 506 first, then numbers, zone-letter codes, variants."""
    pool = [str(k) for k in range(101, 600) if k != 506]
    pool += [f"{z}{k:02d}" for z in "BCDEFGHIJ" for k in range(1, 31)]
    pool += [f"{k}{s}" for k in range(101, 600, 7) for s in ("e", "v", "c", "N")]
    if n - 1 > len(pool):
        raise GeneratorError(
            f"{n} services asked for, but only {len(pool) + 1} distinct codes exist: "
            "use a smaller --reference-scale"
        )
    return ["506"] + rng.sample(pool, n - 1)


def _seed_services(cur, rng, gtfs_id, n, written) -> list[tuple[int, str]]:
    ids = take_ids(cur, "service", n)
    services, rows = [], []
    for i, code in enumerate(_service_codes(rng, n)):
        origin, destiny = rng.sample(COMUNAS, 2)
        color_id = rng.randrange(12)
        rows.append((ids[i], code, origin, destiny, f"#{rng.getrandbits(24):06x}", color_id, gtfs_id))
        services.append((ids[i], code))
    written["service"] = copy_rows(
        cur, "service", ("id", "service", "origin", "destiny", "color", "color_id", "gtfs_id"), rows
    )
    return services


def _spread(total: int, parts: int) -> list[int]:
    """Split ``total`` into ``parts`` near-equal non-negative integers."""
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def _seed_lines(cur, rng, gtfs_id, stops, services, counts: ReferenceCounts, written) -> None:
    """Per service and direction (I/R): a stop sequence, its distances, its route polyline."""
    lines = [(sid, code, d) for sid, code in services for d in "IR"]
    by_stop, distance, route = [], [], []
    n_sbs = _spread(counts.services_by_stop, len(lines))
    n_dist = _spread(counts.stop_distances, len(lines))
    n_route = _spread(counts.route_points, len(lines))
    for (sid, code, d), k_sbs, k_dist, k_route in zip(lines, n_sbs, n_dist, n_route, strict=True):
        seq = rng.sample(stops, min(len(stops), max(k_sbs, k_dist)))
        line_code = f"{code}{d}"
        by_stop += [(line_code, stop[0], sid, gtfs_id) for stop in seq[:k_sbs]]
        metres = 0
        for stop in seq[:k_dist]:
            distance.append((stop[0], line_code, metres, gtfs_id))
            metres += rng.randint(150, 900)
        lon, lat = rng_point(rng)
        for k in range(k_route):
            route.append((lon, lat, line_code, k + 1, gtfs_id))
            lon, lat = jitter(rng, lon, lat, 400)
    ids = take_ids(cur, "servicesbybusstop", len(by_stop))
    written["servicesbybusstop"] = copy_rows(
        cur,
        "servicesbybusstop",
        ("id", "code", "busStop_id", "service_id", "gtfs_id"),
        [(i, *r) for i, r in zip(ids, by_stop, strict=True)],
    )
    ids = take_ids(cur, "servicestopdistance", len(distance))
    written["servicestopdistance"] = copy_rows(
        cur,
        "servicestopdistance",
        ("id", "busStop_id", "service", "distance", "gtfs_id"),
        [(i, *r) for i, r in zip(ids, distance, strict=True)],
    )
    ids = take_ids(cur, "route", len(route))
    written["route"] = copy_rows(
        cur,
        "route",
        ("id", "longitude", "latitude", "serviceCode", "sequence", "gtfs_id"),
        [(i, *r) for i, r in zip(ids, route, strict=True)],
    )


def plate(rng: random.Random) -> str:
    """A licence plate: old AAAA11 / new-style BB1234 formats, or DUMMYLPT when unknown."""
    x = rng.random()
    if x < 0.10:
        return "DUMMYLPT"
    if x < 0.70:
        return "".join(rng.choice(PLATE_LETTERS) for _ in range(4)) + f"{rng.randrange(100):02d}"
    return "".join(rng.choice(PLATE_LETTERS) for _ in range(2)) + f"{rng.randrange(10000):04d}"


def _seed_buses(cur, rng, service_codes, n, written) -> None:
    """Buses with one or two service assignments each (unique per bus and service)."""
    buses = [(i, plate(rng), rng_uuid(rng)) for i in take_ids(cur, "busv2", n)]
    written["busv2"] = copy_rows(cur, "busv2", ("id", "registrationPlate", "uuid"), buses)
    assignments = []
    for bus_id, _, _ in buses:
        for code in rng.sample(service_codes, min(len(service_codes), 1 if rng.random() < 0.8 else 2)):
            assignments.append((code, bus_id))
    ids = take_ids(cur, "busassignment", len(assignments))
    written["busassignment"] = copy_rows(
        cur,
        "busassignment",
        ("id", "service", "uuid_id"),
        [(i, *a) for i, a in zip(ids, assignments, strict=True)],
    )


def _seed_users(cur, rng, n, written) -> None:
    """App users; their email and sessionToken are the personal data the pipeline excludes."""
    cur.execute(f"SELECT id, position FROM {table('level')} ORDER BY position")
    levels = [r[0] for r in cur.fetchall()]
    if not levels:
        raise GeneratorError(
            f"no levels in {app_table('level')}: seed a database whose catalogues are complete"
        )
    rows = []
    for i, user_row_id in enumerate(take_ids(cur, "transappuser", n)):
        first_name, last_name = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        account = rng.choice(("FACEBOOK", "GOOGLE"))
        user_id = (
            str(rng.randrange(10**15, 10**16))
            if account == "FACEBOOK"
            else str(rng.randrange(10**20, 10**21))
        )
        handle = f"{first_name}.{last_name}".lower().translate(str.maketrans("áéíóúñ", "aeioun"))
        email = f"{handle}{rng.randrange(1000)}@{rng.choice(MAIL_DOMAINS)}"
        nickname = f"{first_name[:8]}{rng.randrange(10000)}"
        photo = f"https://lh3.googleusercontent.com/{hashlib.sha1(email.encode()).hexdigest()}/photo.jpg"
        created = REFERENCE_EPOCH + timedelta(seconds=rng.randrange(86400 * 200))
        rows.append(
            (
                user_row_id,
                user_id,
                f"{first_name} {last_name}",
                email,
                rng_uuid(rng),
                account,
                float(rng.randrange(5000)),
                rng.choice(levels),
                rng_uuid(rng),
                nickname,
                photo,
                rng_uuid(rng),
                i + 1,
                created,
            )
        )
    written["transappuser"] = copy_rows(
        cur,
        "transappuser",
        (
            "id",
            "userId",
            "name",
            "email",
            "phoneId",
            "accountType",
            "globalScore",
            "level_id",
            "sessionToken",
            "nickname",
            "photoURI",
            "externalId",
            "globalPosition",
            "timeCreation",
        ),
        rows,
    )
