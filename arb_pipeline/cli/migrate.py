"""``arb migrate``: apply the schema migrations of one role to one database."""

from __future__ import annotations

import os

from arb_pipeline.schema.migrate import ROLES, apply_migrations


def register(subparsers) -> None:
    p = subparsers.add_parser("migrate", help="apply the project's SQL migrations (idempotent)")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument(
        "--dsn", default=os.environ.get("ARB_DB_DSN"), help="libpq connection string (default: $ARB_DB_DSN)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.errors import ConfigError

    if not args.dsn:
        raise ConfigError("no database given: pass --dsn or set ARB_DB_DSN")
    applied = apply_migrations(args.dsn, args.role)
    print(
        f"{args.role}: applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else " (up to date)")
    )
    return 0
