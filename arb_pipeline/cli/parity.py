"""``arb parity``: is the receiver's copy equal to the sender's? Exit 0 if so, 1 on drift.

A bad setting or an unreachable server is an ArbError, which ``arb`` turns into exit 2,
so scripts can tell "the data differ" from "the check could not run".

On a terminal (or with ARB_PROGRESS=1) a progress bar on stderr counts the tables.
"""

from __future__ import annotations

import json

from arb_pipeline.errors import ConfigError
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.progress import Progress
from arb_pipeline.settings import RECEIVER_DSN, SENDER_DSN


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "parity",
        help="compare the replicated tables (and optionally media folders) of sender and receiver",
        description="Compare the sender's and the receiver's replicated tables on their shared columns "
        "and, if given, their media folders. Exit status: 0 equal, 1 drift, 2 error.",
    )
    p.add_argument(
        "--sender-dsn",
        help="sender libpq connection string (default: $ARB_SENDER_DSN)",
    )
    p.add_argument(
        "--receiver-dsn",
        help="receiver libpq connection string (default: $ARB_RECEIVER_DSN)",
    )
    p.add_argument(
        "--table",
        action="append",
        dest="tables",
        metavar="T",
        help="compare only this table (repeatable; a name without the catalog's table_prefix gets it: "
        "'busstop' means AndroidRequests_busstop); "
        "default: every table with the catalog's table_prefix on both sides",
    )
    p.add_argument("--sender-media", metavar="DIR", help="sender media folder")
    p.add_argument("--receiver-media", metavar="DIR", help="receiver media folder")
    p.add_argument(
        "--max-diffs",
        type=int,
        default=10,
        metavar="N",
        help="name at most N differing keys/files per table (default: 10)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    args.sender_dsn = args.sender_dsn or SENDER_DSN.read()
    args.receiver_dsn = args.receiver_dsn or RECEIVER_DSN.read()
    if not args.sender_dsn:
        raise ConfigError("no sender database given: pass --sender-dsn or set ARB_SENDER_DSN")
    if not args.receiver_dsn:
        raise ConfigError("no receiver database given: pass --receiver-dsn or set ARB_RECEIVER_DSN")
    if bool(args.sender_media) != bool(args.receiver_media):
        raise ConfigError(
            "media folders come in pairs: pass both --sender-media and --receiver-media, or neither"
        )
    if args.max_diffs < 0:
        raise ConfigError(f"--max-diffs must be 0 or more, not {args.max_diffs}")
    report = compare_tables(
        args.sender_dsn, args.receiver_dsn, tables=args.tables, max_diffs=args.max_diffs, progress=Progress()
    )
    if args.sender_media:
        report.media = compare_media(args.sender_media, args.receiver_media, max_diffs=args.max_diffs)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.format())
    return 0 if report.ok else 1
