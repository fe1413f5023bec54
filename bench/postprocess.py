"""Benchmark of the receiver's postprocessing: one typical window, and a full backfill.

    .venv/bin/python -m bench.postprocess [--events 1000000] [--window-events 500]

Starts its own PostgreSQL under a temporary folder and fills a receiver database
set-based (the generator's bulk SQL, as if loaded): one GTFS version's stops, buses,
``--events`` bus and bus-stop events with one vote each spread over 30 days, trips
(poses) of the same phones, reports (a few malformed) and the real zoning (EOD 2012,
866 zones). Then:

* **full backfill**: the first run of every derivation computes every row, writing
  TranSappViz's columns and reportinfo rows (zones and nearest stops in PostGIS); the
  baseline is the previous engine's figures (``arb_pp_*`` tables, shapely and scipy in
  Python): 94 s for 1M events, 0.61 s a window, on this 2-core machine;
* **typical window**: a 5-minute window's worth of new events and votes plus votes
  that update older events (as a partial load marks them), then one incremental run;
* **idle**: an incremental run with nothing pending (what every run costs at least).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc
P = "AndroidRequests_"


def _seed_reference(conn) -> None:
    """One GTFS version at real volumes (11.3k stops, 380 services, 3k buses), no users."""
    from arb_pipeline.dev.generator import reference as ref

    rng = random.Random("bench:v1.3")
    written: dict = {}
    with conn.transaction(), conn.cursor() as cur:
        ref._seed_catalogues(cur, written)
        gtfs_id = ref.take_ids(cur, "gtfs", 1)[0]
        ref.copy_rows(
            cur, "gtfs", ("id", "version", "timeCreation"), [(gtfs_id, "v1.3", ref.REFERENCE_EPOCH)]
        )
        counts = ref.ReferenceCounts()
        stops = ref._seed_stops(cur, rng, gtfs_id, counts.stops, written)
        services = ref._seed_services(cur, rng, gtfs_id, counts.services, written)
        ref._seed_buses(cur, rng, [code for _, code in services], counts.buses, written)
    print(f"reference: {len(stops):,} stops, {counts.buses:,} buses", flush=True)


_REPORTS = f"""
INSERT INTO "{P}report" ("timeStamp", message, "imageName", "reportInfo", "phoneId")
SELECT %(start)s::timestamptz + g * %(step)s::interval, 'bench', NULL,
       CASE WHEN g %% 97 = 0 THEN '{{"locationUser": broken'
            WHEN g %% 2 = 0 THEN json_build_object(
                'locationUser', json_build_object('latitude', -33.65 + 0.35 * random(),
                                                  'longitude', -70.85 + 0.4 * random()),
                'bus', json_build_object('licensePlate', b."registrationPlate", 'machineId', b.uuid,
                                         'service', '506',
                                         'latitude', -33.65 + 0.35 * random(),
                                         'longitude', -70.85 + 0.4 * random()))::text
            ELSE json_build_object(
                'locationUser', json_build_object('latitude', -33.65 + 0.35 * random(),
                                                  'longitude', -70.85 + 0.4 * random()),
                CASE WHEN g %% 4 = 1 THEN 'bus_stop' ELSE 'busStop' END,
                json_build_object('id', 'PA' || (g %% 4000), 'latitude', -33.5,
                                  'longitude', -70.6))::text END,
       md5((g %% 5000)::text)::uuid
FROM generate_series(0, %(n)s::bigint - 1) g
JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS k, "registrationPlate", uuid FROM "{P}busv2") b
  ON b.k = g %% (SELECT count(*) FROM "{P}busv2")
"""


def _fill(conn, events: int, poses: int, end: datetime, days: float) -> dict:
    from arb_pipeline.dev.generator.scale import (
        _insert_trips,
        _reference_ids,
        _skip_fk_checks,
        build_event_window,
    )

    start = end - timedelta(days=days)
    t0 = time.perf_counter()
    # build_event_window splits its rows 30/30/20/20 between bus events, bus votes, stop events, stop votes.
    build_event_window(conn, start, rows=events * 2, minutes=days * 1440)
    with conn.transaction(), conn.cursor() as cur:
        _skip_fk_checks(conn)
        refs = _reference_ids(cur)
        _insert_trips(cur, poses, start - timedelta(minutes=30), days * 86400e6 / poses, refs[0])
        cur.execute(
            _REPORTS,
            {"start": start, "step": timedelta(days=days) / max(1, events // 20), "n": max(1, events // 20)},
        )
    with conn.cursor() as cur:
        counts = {
            t: cur.execute(f'SELECT count(*) FROM "{P}{t}"').fetchone()[0]
            for t in (
                "eventforbusv2",
                "eventforbusstop",
                "stadisticdatafromregistrationbus",
                "stadisticdatafromregistrationbusstop",
                "report",
                "poseintrajectoryoftoken",
            )
        }
    conn.commit()
    print(
        f"filled in {time.perf_counter() - t0:.0f} s: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
        flush=True,
    )
    return counts


# The previous engine (arb_pp_* tables; shapely STRtree zones, scipy cKDTree stops), same
# bench, same machine, 1M events: docs/benchmarks.md.
PREVIOUS = {"events": 1_000_000, "full_s": 94.0, "window_s": 0.61}


def _window(conn, events: int, updates: int, at: datetime) -> None:
    """A partial's worth of change: new events with votes, and votes on older events."""
    from arb_pipeline.dev.generator.scale import build_event_window

    build_event_window(conn, at, rows=events * 2, minutes=5)
    with conn.transaction():
        for kind, stats in (
            ("eventforbusv2", "stadisticdatafromregistrationbus"),
            ("eventforbusstop", "stadisticdatafromregistrationbusstop"),
        ):
            ids = [
                r[0]
                for r in conn.execute(
                    f'SELECT id FROM "{P}{kind}" WHERE "timeStamp" < %s ORDER BY random() LIMIT %s',
                    (at, updates // 2),
                )
            ]
            conn.execute(
                f'UPDATE "{P}{kind}" SET "timeStamp" = %s, "eventConfirm" = "eventConfirm" + 1, '
                f"arb_changed_at = clock_timestamp(), transformed = false WHERE id = ANY(%s)",
                (at, ids),
            )
            conn.execute(
                f'INSERT INTO "{P}{stats}" (longitude, latitude, "timeStamp", "confirmDecline", "phoneId", '
                f'"reportOfEvent_id") SELECT -70.85 + 0.4 * random(), -33.65 + 0.35 * random(), %s, '
                f"'confirm', md5(id::text)::uuid, id FROM unnest(%s::int[]) id",
                (at, ids),
            )
        conn.execute(_REPORTS, {"start": at, "step": timedelta(seconds=10), "n": 20})


def _timed(run, *args) -> tuple[float, list]:
    t0 = time.perf_counter()
    results = run(*args)
    return time.perf_counter() - t0, results


def _report(title: str, timed: tuple[float, list]) -> float:
    """Prints the run's wall time and each derivation's own (tables run two at a time,
    so those add up to more)."""
    total, results = timed
    rows = sum(r.computed for r in results)
    print(f"{title}: {total:.2f} s, {rows:,} derived rows")
    for r in results:
        print(
            f"    {r.derivation:<24} {r.mode:<11} {r.computed:>9,} rows {r.problems:>7,} problems "
            f"{r.seconds:8.2f} s"
        )
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="bus and bus-stop events in the backfill"
    )
    parser.add_argument("--poses", type=int, default=None, help="trip poses (default: twice --events)")
    parser.add_argument("--window-events", type=int, default=500, help="new events in the typical window")
    parser.add_argument(
        "--window-updates", type=int, default=200, help="older events a window's votes update"
    )
    args = parser.parse_args(argv)

    from arb_pipeline.dev.postgres import LocalPostgres
    from arb_pipeline.ops.zoning import bundled_zoning, import_zoning
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.postprocess import Scope, run_all
    from arb_pipeline.schema.migrate import apply_migrations

    base = Path(tempfile.mkdtemp(prefix="arb-bench-pp-"))
    pg = LocalPostgres(base / "pg").start()
    try:
        dsn = pg.create_database("receiver")
        apply_migrations(dsn, "receiver")
        import_zoning(dsn, bundled_zoning())  # the real zoning (EOD 2012, 866 zones)
        end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
        with connect(dsn) as conn:
            _seed_reference(conn)
            counts = _fill(conn, args.events, args.poses or 2 * args.events, end, days=30)
        with connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        n_events = counts["eventforbusv2"] + counts["eventforbusstop"]

        t_full = _report(
            f"full backfill ({n_events:,} events, {counts['report']:,} reports)", _timed(run_all, dsn)
        )
        t_idle = _report("idle incremental run (nothing pending)", _timed(run_all, dsn))
        with connect(dsn) as conn:
            _window(conn, args.window_events, args.window_updates, end + timedelta(minutes=5))
        t_window = _report(
            f"typical window ({args.window_events} new events, {args.window_updates} updated, 20 reports)",
            _timed(run_all, dsn),
        )
        t_redo = _report(
            "one 5-minute window recomputed by hand",
            _timed(
                run_all,
                dsn,
                Scope(end + timedelta(minutes=5), end + timedelta(minutes=10), recompute_window=True),
            ),
        )

        print("\n== postprocessing benchmark ==")
        before = PREVIOUS["full_s"] / PREVIOUS["events"] * n_events  # the previous rate, at this size
        figures = {
            f"full backfill of {n_events:,} events": f"{t_full:.1f} s, {n_events / t_full:,.0f} events/s; "
            f"previous engine {PREVIOUS['events'] / PREVIOUS['full_s']:,.0f} events/s "
            f"({before:.1f} s at this size): {before / t_full:.2f}x as fast",
            "typical 5-minute window": f"{t_window:.2f} s (previous engine {PREVIOUS['window_s']:.2f} s: "
            f"{PREVIOUS['window_s'] / t_window:.2f}x as fast)",
            "idle run, nothing pending": f"{t_idle:.2f} s",
            "a past window by hand": f"{t_redo:.2f} s",
        }
        for name, value in figures.items():
            print(f"- {name}: {value}")
        print(
            json.dumps(
                {
                    "full_s": t_full,
                    "window_s": t_window,
                    "idle_s": t_idle,
                    "events": n_events,
                }
            )
        )
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
