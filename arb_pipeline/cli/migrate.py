"""``arb migrate``: bring one database's schema in line with the project and the catalog.

On a database the app's own migrations created, it only adds the pipeline's objects;
``--dry-run`` prints what it would do and, table by table, whether the existing tables
fit (exit 1 if one can't), changing nothing.
"""

from __future__ import annotations

from arb_pipeline.schema.migrate import ROLES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="apply the SQL migrations (idempotent); --dry-run: the plan and a compatibility report",
        description="Apply the pending migrations of one role. On a database whose app tables exist "
        "already (created by Django), the app's part is recorded as adopted and only the pipeline's own "
        "objects are added. --dry-run changes nothing: it prints the plan and, per catalog table, what "
        "does not fit and the fix (exit 1 if something fails).",
    )
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument(
        "--dsn",
        help="libpq connection string, as the database's owner "
        "(default: the role's $ARB_SENDER_DSN or $ARB_RECEIVER_DSN)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would change and the report; change nothing"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--sender-dsn", help="receiver dry run: compare with what this sender database ships (read only)"
    )
    source.add_argument(
        "--backup",
        metavar="FOLDER",
        help="receiver dry run: compare with what this backup's manifest carries",
    )
    p.set_defaults(func=run)


def _dsn(args) -> str:
    from arb_pipeline.errors import ConfigError
    from arb_pipeline.settings import role_dsn

    dsn = args.dsn or role_dsn(args.role)
    if not dsn:
        raise ConfigError(f"no database given: pass --dsn or set ARB_{args.role.upper()}_DSN")
    return dsn


def run(args) -> int:
    from arb_pipeline.schema.migrate import apply_migrations

    dsn = _dsn(args)
    if args.dry_run:
        return dry_run(args, dsn)
    result = apply_migrations(dsn, args.role)
    done = [
        f"applied {len(result.applied)} migration(s)"
        + (": " + ", ".join(result.applied) if result.applied else "")
    ]
    if result.adopted:
        done.append(f"adopted {len(result.adopted)} (the app's tables exist): " + ", ".join(result.adopted))
    if result.synced:
        done.append(f"{len(result.synced)} catalog change(s): " + "; ".join(result.synced))
    up_to_date = not (result.applied or result.adopted or result.synced)
    print(f"{args.role}: " + ("up to date" if up_to_date else "\n  ".join(done)))
    return 0


def dry_run(args, dsn: str) -> int:
    from arb_pipeline.catalog import current_catalog
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn
    from arb_pipeline.schema import compat
    from arb_pipeline.schema.migrate import plan_migrations

    catalog = current_catalog()
    shipped, source = None, "the catalog's exclusions"
    if args.sender_dsn:
        with connect(args.sender_dsn) as sender:
            shipped, source = compat.shipped_by_sender(sender, catalog), describe_dsn(args.sender_dsn)
    elif args.backup:
        shipped, source = compat.shipped_in_backup(args.backup), f"backup {args.backup}"
    with connect(dsn) as conn:
        print(f"arb migrate --role {args.role} on {describe_dsn(dsn)}, catalog {catalog.path}:")
        failed = False
        try:
            for line in plan_migrations(conn, args.role, catalog).lines():
                print(f"  {line}")
        except ArbError as exc:  # the report below still says which tables are at fault
            print(f"  cannot migrate: {exc}")
            failed = True
        found = compat.findings(conn, args.role, catalog, shipped)
    print("compatibility" + (f" (against {source})" if args.role == "receiver" else "") + ":")
    width = max(len(f.table) for f in found)
    for f in found:
        print(f"  {f.level:<4}  {f.table:<{width}}  {f.detail}")
        if f.fix and f.level != compat.OK:
            print(f"  {'':<4}  {'':<{width}}  fix: {f.fix}")
    counts = {
        level: sum(1 for f in found if f.level == level) for level in (compat.OK, compat.WARN, compat.FAIL)
    }
    print(f"  {counts[compat.OK]} ok, {counts[compat.WARN]} warning(s), {counts[compat.FAIL]} failed")
    return 1 if failed or counts[compat.FAIL] else 0
