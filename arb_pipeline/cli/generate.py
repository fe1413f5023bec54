"""``arb generate``: seed reference data, drive live traffic, or bulk-fill a sender database."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import SENDER_DSN


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="deterministic TranSapp workload on a sender database")
    sub = p.add_subparsers(dest="generate_command", required=True, metavar="SUBCOMMAND")

    def common(sp, media: bool = True):
        sp.add_argument(
            "--dsn",
            help="sender libpq connection string (default: $ARB_SENDER_DSN)",
        )
        if media:
            sp.add_argument(
                "--media-dir", required=True, type=Path, help="the app's media folder for report images"
            )

    s = sub.add_parser("seed", help="write one GTFS version's reference data, buses, users and events")
    common(s)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--gtfs-version", default="v1.3")
    s.add_argument(
        "--reference-scale",
        type=float,
        default=1.0,
        help="multiply the real volumes (11.3k stops, 380 services...) by this factor",
    )
    s.set_defaults(func=run_seed)

    t = sub.add_parser("traffic", help="run the app's write patterns at a steady rate")
    common(t)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--rate", type=float, default=5.0, help="operations per second")
    t.add_argument("--duration", type=float, required=True, help="seconds to run")
    t.add_argument(
        "--clock-offset-seconds",
        type=float,
        default=0.0,
        help="the app server's clock minus the real time (may be negative)",
    )
    t.add_argument(
        "--late-commit-minutes",
        type=float,
        default=None,
        help="keep one vote's transaction open this long before committing it",
    )
    t.set_defaults(func=run_traffic)

    c = sub.add_parser("scale", help="bulk-fill telemetry, events and stats up to a database size")
    common(c, media=False)
    c.add_argument(
        "--gigabytes", type=float, required=True, help="target pg_database_size in GB (10^9 bytes)"
    )
    c.add_argument("--span-days", type=float, default=60, help="days of history the rows spread over")
    c.set_defaults(func=run_scale)

    w = sub.add_parser("window", help="write ~N event and stat rows with timeStamps in one window")
    common(w, media=False)
    w.add_argument(
        "--start", required=True, help="window start, ISO 8601 with offset, e.g. 2024-05-01T12:00:00+00:00"
    )
    w.add_argument("--rows", type=int, default=100_000)
    w.add_argument("--minutes", type=float, default=5)
    w.set_defaults(func=run_window)


def _dsn(args) -> str:
    dsn = args.dsn or SENDER_DSN.read()
    if not dsn:
        raise ConfigError("no sender database given: pass --dsn or set ARB_SENDER_DSN")
    return dsn


def run_seed(args) -> int:
    from arb_pipeline.dev.generator.reference import seed_reference
    from arb_pipeline.pg.connect import connect

    args.media_dir.mkdir(parents=True, exist_ok=True)
    with connect(_dsn(args)) as conn:
        written = seed_reference(conn, args.seed, gtfs_version=args.gtfs_version, scale=args.reference_scale)
    print(f"seeded {args.gtfs_version}: " + ", ".join(f"{t} {n}" for t, n in written.items()))
    return 0


def run_traffic(args) -> int:
    from arb_pipeline.dev.generator.workload import Workload

    late = timedelta(minutes=args.late_commit_minutes) if args.late_commit_minutes else None
    with Workload(
        _dsn(args), args.media_dir, args.seed, clock_offset=timedelta(seconds=args.clock_offset_seconds)
    ) as workload:
        done = workload.run(args.rate, duration_s=args.duration, late_commit_after=late)
    print(f"ran {sum(done.values())} operations: " + ", ".join(f"{k} {v}" for k, v in sorted(done.items())))
    return 0


def run_scale(args) -> int:
    from arb_pipeline.dev.generator.scale import build_scale
    from arb_pipeline.pg.connect import connect

    def progress(size: int, target: int) -> None:
        print(f"  {size / 1e9:.2f} / {target / 1e9:.2f} GB", flush=True)

    with connect(_dsn(args)) as conn:
        result = build_scale(conn, args.gigabytes, span_days=args.span_days, progress=progress)
    print(
        f"database {result.start_bytes / 1e9:.2f} GB -> {result.end_bytes / 1e9:.2f} GB in "
        f"{result.seconds:.1f} s "
        f"({result.mb_per_s:.0f} MB/s): " + ", ".join(f"{t} {n}" for t, n in result.rows.items())
    )
    return 0


def run_window(args) -> int:
    from arb_pipeline.dev.generator.scale import build_event_window
    from arb_pipeline.pg.connect import connect

    try:
        start = datetime.fromisoformat(args.start)
    except ValueError as exc:
        raise ConfigError(
            f"--start {args.start!r} is not an ISO 8601 time: use e.g. 2024-05-01T12:00:00+00:00"
        ) from exc
    with connect(_dsn(args)) as conn:
        written = build_event_window(conn, start, rows=args.rows, minutes=args.minutes)
    print(
        f"window {start.isoformat()} +{args.minutes} min: "
        + ", ".join(f"{t} {n}" for t, n in written.items())
    )
    return 0
