"""PostgreSQL connections with the session settings every arb_pipeline query relies on."""

from __future__ import annotations

import psycopg

from arb_pipeline.errors import ConfigError


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "arb_pipeline") -> psycopg.Connection:
    """Open a connection in UTC, so timestamptz text is the same on both servers.

    A connection failure becomes a ConfigError naming the target without its password.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            application_name=application_name,
            options="-c TimeZone=UTC -c DateStyle=ISO",
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        raise ConfigError(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {str(exc).strip()}. "
            "Check that the server is running and the DSN setting (host, port, user, dbname) is right."
        ) from exc


def describe_dsn(dsn: str) -> str:
    """A DSN with any password removed, for messages and logs."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(params.items()))


def client_program_args(dsn: str) -> tuple[str, dict[str, str]]:
    """A conninfo for libpq programs (pg_dump, psql) and their environment: the password
    goes in PGPASSWORD, never on the command line where `ps` shows it."""
    import os

    params = psycopg.conninfo.conninfo_to_dict(dsn)
    env = dict(os.environ)
    if "password" in params:
        env["PGPASSWORD"] = str(params.pop("password"))
    return psycopg.conninfo.make_conninfo(**params), env


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL does (TranSapp's names are mixed case)."""
    return '"' + name.replace('"', '""') + '"'
