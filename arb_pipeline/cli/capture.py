"""``arb capture setup|drop|status``: the sender's change-capture slot and publication
(docs/change-capture.md). Through $ARB_SENDER_DSN or --dsn; the names from ARB_CAPTURE_SLOT and
ARB_CAPTURE_PUBLICATION, the alert threshold from ARB_CAPTURE_MAX_LAG_MB.
"""

from __future__ import annotations

import psycopg

from arb_pipeline.errors import ConfigError

STEPS_HEADER = {True: "-- would run (dry run, nothing changed):", False: "-- ran:"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "capture",
        help="sender: set up, drop or show the change-capture slot and publication",
        description="The logical replication slot and publication change capture reads (sender side).",
    )
    sub = p.add_subparsers(dest="capture_command", required=True, metavar="SUBCOMMAND")

    def common(sp, dry_run: bool):
        sp.add_argument("--dsn", help="sender libpq connection string (default: $ARB_SENDER_DSN)")
        if dry_run:
            sp.add_argument(
                "--dry-run", action="store_true", help="print the SQL it would run; change nothing"
            )

    s = sub.add_parser(
        "setup",
        help="check the prerequisites, create the publication of the catalog's tables and the slot",
        description="Check the server's prerequisites (each problem with its fix), then create the "
        "publication of the catalog's tables and the pgoutput slot; a lost slot is recreated. "
        "Idempotent. Exit 1 when a prerequisite this command can't fix is missing.",
    )
    common(s, dry_run=True)
    s.set_defaults(func=run_setup)
    d = sub.add_parser("drop", help="drop the slot and the publication (frees the WAL the slot holds)")
    common(d, dry_run=True)
    d.set_defaults(func=run_drop)
    st = sub.add_parser(
        "status",
        help="the slot's lag, retained WAL, wal_status and what to do (exit 1 on a problem)",
    )
    common(st, dry_run=False)
    st.set_defaults(func=run_status)


def _connect(args):
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.settings import SENDER_DSN, CaptureSettings

    dsn = args.dsn or SENDER_DSN.read()
    if not dsn:
        raise ConfigError("no sender database given: pass --dsn or set ARB_SENDER_DSN")
    return connect(dsn, autocommit=True), CaptureSettings.from_env()


def _run_plan(args, make_plan) -> int:
    from arb_pipeline.capture.setup import run_plan

    conn, capture = _connect(args)
    with conn:
        plan = make_plan(conn, capture)
        for problem in plan.blocking:
            print(f"-- problem: {problem}")
        for advice in plan.advice:
            print(f"-- recommended: {advice}")
        if plan.blocking:
            print("-- nothing run: fix the problems above, then run `arb capture setup` again")
            return 1
        if not plan.steps:
            print("-- nothing to do: already so")
            return 0
        lines = plan.sql_lines(conn)
        if not args.dry_run:
            try:
                run_plan(conn, plan)
            except psycopg.Error as exc:  # e.g. a slot in use can't be dropped: say which
                raise ConfigError(f"PostgreSQL refused: {str(exc).strip()}") from None
        print(STEPS_HEADER[args.dry_run])
        for step, line in zip(plan.steps, lines, strict=True):
            print(f"-- {step.why}\n{line}")
    return 0


def run_setup(args) -> int:
    from arb_pipeline.capture.setup import plan_setup
    from arb_pipeline.catalog import current_catalog

    tables = current_catalog().table_names
    return _run_plan(args, lambda conn, c: plan_setup(conn, c.slot, c.publication, tables))


def run_drop(args) -> int:
    from arb_pipeline.capture.setup import plan_drop

    return _run_plan(args, lambda conn, c: plan_drop(conn, c.slot, c.publication))


def run_status(args) -> int:
    from arb_pipeline.capture.health import read_slot_health

    conn, capture = _connect(args)
    with conn:
        health = read_slot_health(conn, capture.slot, capture.publication, capture.max_lag_mb)
    s = health.status
    print(health.figures() + ("" if s.exists else " (capture is not set up: `arb capture setup`)"))
    print(f"publication {capture.publication}: {'exists' if health.publication_exists else 'does not exist'}")
    print(f"alert threshold (ARB_CAPTURE_MAX_LAG_MB): {capture.max_lag_mb:g} MB")
    for kind, findings in (("problem", health.problems), ("recommended", health.warnings)):
        for f in findings:
            print(f"{kind}: {f.problem}\n  fix: {f.fix}")
    return 1 if health.problems else 0
