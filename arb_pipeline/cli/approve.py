"""``arb approve BACKUP_ID``: let a complete the guard on mass deletion held load.

The load that held it failed with the rows per table it would delete (load/hold.py); the
approval is recorded in the receiver's database for that backup's manifest, and the inbox
sensor's next tick loads it. Through $ARB_RECEIVER_DSN or --dsn.
"""

from __future__ import annotations

import getpass

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import RECEIVER_DSN


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "approve",
        help="let a complete backup held for its deletions load (the next sensor tick loads it)",
        description="A complete that would delete more than ARB_MAX_DELETE_SHARE of a table, or empty "
        "one, waits. Approve it once you know the sender really removed those rows.",
    )
    p.add_argument("backup_id", help="the held backup's id, as its failed load's alert names it")
    p.add_argument("--dsn", help="receiver libpq connection string (default: $ARB_RECEIVER_DSN)")
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.load.hold import approve

    dsn = args.dsn or RECEIVER_DSN.read()
    if not dsn:
        raise ConfigError("no receiver database given: pass --dsn or set ARB_RECEIVER_DSN")
    print(approve(dsn, args.backup_id, getpass.getuser()))
    return 0
