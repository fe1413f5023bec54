"""``arb adopt``: take over a receiver that held data before the pipeline.

``--prune-unshipped`` removes the replicated rows no backup wrote (load/prune.py);
``--dry-run`` only counts them. Through $ARB_RECEIVER_DSN or --dsn.
"""

from __future__ import annotations

from arb_pipeline.catalog import current_catalog
from arb_pipeline.errors import ConfigError
from arb_pipeline.settings import RECEIVER_DSN


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "adopt",
        help="on a receiver with history of its own: count or remove the rows no backup wrote",
        description="A complete never deletes receiver rows no backup wrote (no arb_synced_at). "
        "--prune-unshipped removes them, in one transaction, once a complete has been loaded.",
    )
    p.add_argument(
        "--prune-unshipped",
        action="store_true",
        help="delete, per replicated table, the rows no backup wrote (and their derived rows)",
    )
    p.add_argument("--dry-run", action="store_true", help="only list how many rows per table would go")
    p.add_argument("--dsn", help="receiver libpq connection string (default: $ARB_RECEIVER_DSN)")
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.load.prune import prune_unshipped

    if not args.prune_unshipped:
        raise ConfigError("nothing to do: pass --prune-unshipped (with --dry-run to only count)")
    dsn = args.dsn or RECEIVER_DSN.read()
    if not dsn:
        raise ConfigError("no receiver database given: pass --dsn or set ARB_RECEIVER_DSN")
    tables = prune_unshipped(dsn, dry_run=args.dry_run)
    short_name = current_catalog().short_name
    for t in tables:
        if args.dry_run:
            print(f"{short_name(t.table)}: {t.unshipped} row(s) no backup wrote")
        else:
            kept = f", {t.kept} kept (still referenced by rows a backup wrote)" if t.kept else ""
            print(f"{short_name(t.table)}: {t.deleted} of {t.unshipped} row(s) no backup wrote deleted{kept}")
    if args.dry_run:
        print(f"total: {sum(t.unshipped for t in tables)} row(s) no backup wrote (dry run: nothing deleted)")
    else:
        print(f"total: {sum(t.deleted for t in tables)} row(s) deleted")
    return 0
