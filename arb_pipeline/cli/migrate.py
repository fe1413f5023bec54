"""``arb migrate``: apply the schema migrations of one role to one database."""

from __future__ import annotations

from arb_pipeline.schema.migrate import ROLES, apply_migrations
from arb_pipeline.settings import role_dsn


def register(subparsers) -> None:
    p = subparsers.add_parser("migrate", help="apply the project's SQL migrations (idempotent)")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument(
        "--dsn",
        help="libpq connection string, as the database's owner "
        "(default: the role's $ARB_SENDER_DSN or $ARB_RECEIVER_DSN)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from arb_pipeline.errors import ConfigError

    dsn = args.dsn or role_dsn(args.role)
    if not dsn:
        name = f"ARB_{args.role.upper()}_DSN"
        raise ConfigError(f"no database given: pass --dsn or set {name}")
    applied = apply_migrations(dsn, args.role)
    print(
        f"{args.role}: applied {len(applied)} migration(s)"
        + (": " + ", ".join(applied) if applied else " (up to date)")
    )
    return 0
