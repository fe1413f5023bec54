"""``arb restore``: the sender's state at a time T, from the backups in an inbox, into a new database.

Exit status: 0 restored and equal to the backups, 1 restored but a table drifted from
them, 2 not restored (an ArbError: bad time, gap, tampered backup, non-empty target...).
"""

from __future__ import annotations

from pathlib import Path

from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import INBOX_DIR


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "restore",
        help="restore the sender's state at a time T from an inbox's backups into a new database",
        description="Restore into a new database the sender's state at T: the newest complete backup at or "
        "before T, then the partials whose windows end by T, each verified first; then compare every "
        "table with the backups' own rows and hashes. Exit status: 0 ok, 1 drift, 2 error.",
    )
    p.add_argument(
        "--inbox",
        type=Path,
        metavar="DIR",
        help="a folder laid out like the receiver's inbox: DIR/complete/<id>/, DIR/partial/<id>/ "
        f"(default: $ARB_INBOX_DIR, else {INBOX_DIR.default})",
    )
    p.add_argument(
        "--at",
        required=True,
        metavar="T",
        help="the time to restore, ISO 8601 (UTC unless an offset is given), e.g. 2026-11-25T10:05:00Z; "
        "'latest' for the newest time the backups cover",
    )
    p.add_argument(
        "--dsn",
        metavar="TARGET_DSN",
        help="libpq DSN of the NEW database to restore into; refused unless it is empty "
        "(never defaults to a setting, so a restore can't land on a live database by mistake)",
    )
    p.add_argument(
        "--create-from",
        metavar="MAINTENANCE_DSN",
        help="create the target database (the dbname of --dsn) through this maintenance connection; "
        "dropped again if the restore fails",
    )
    p.add_argument("--media-dir", type=Path, metavar="DIR", help="also install the backups' media files here")
    p.add_argument(
        "--allow-gaps",
        action="store_true",
        help="restore even if no partial covers some time between the complete and T (a warning)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print which backups would be used and verify them; write nothing",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.progress import Progress
    from arb_pipeline.restore.pitr import parse_time, plan_restore, restore, verify_plan

    args.inbox = args.inbox or Path(INBOX_DIR.read())
    at = None if args.at.strip().lower() == "latest" else parse_time(args.at)
    progress = Progress()
    if args.dry_run:
        plan = plan_restore(args.inbox, at, allow_gaps=args.allow_gaps)
        print(plan.describe())
        for chosen in plan.backups:
            print(
                f"  {chosen.manifest.kind:8} {chosen.backup_id}  window "
                f"{chosen.manifest.window_start:%Y-%m-%d %H:%M}"
                f" .. {chosen.manifest.window_end:%H:%M}  snapshot "
                f"{chosen.manifest.snapshot_time:%Y-%m-%d %H:%M:%S}"
            )
        verify_plan(plan, progress)
        print(
            f"verification OK: the {len(plan.backups)} backup(s) match their manifests (dry run: nothing "
            "written)"
        )
        return 0
    if not args.dsn:
        raise ConfigError(
            "no target database given: pass --dsn 'dbname=NEW_DATABASE ...' (a new, empty database)"
        )
    result = restore(
        args.inbox,
        at,
        args.dsn,
        create_from=args.create_from,
        media_dir=args.media_dir,
        allow_gaps=args.allow_gaps,
        progress=progress,
    )
    print(result.format())
    return 0 if result.ok else 1
