"""PostgreSQL connections with the session settings every arb_pipeline query relies on."""

from __future__ import annotations

import re

import psycopg

from arb_pipeline.errors import ConfigError


def connect(
    dsn: str, *, autocommit: bool = False, application_name: str = "arb_pipeline"
) -> psycopg.Connection:
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
        # Raised without its cause: libpq's text is kept, scrubbed of the password.
        raise ConfigError(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {redact(str(exc).strip(), dsn)}. "
            "Check that the server is running and the DSN setting (host, port, user, dbname) is right."
        ) from None
    except psycopg.ProgrammingError as exc:  # libpq can't parse the DSN; some messages quote it whole
        raise ConfigError(
            f"the PostgreSQL DSN setting can't be parsed: {redact(str(exc).strip(), dsn)}. "
            "Write it as key=value pairs (host=... port=... dbname=... user=...) or a "
            "postgresql:// URI"
        ) from None


def redact(text: str, dsn: str) -> str:
    """``text`` with the DSN's password (and the DSN itself) replaced by ``***``."""
    secrets = [dsn]
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
        # Unparseable: a URI's userinfo, or the value after password=, is all we can guess.
        secrets += re.findall(r"://[^:/@]*:([^@]+)@", dsn) + re.findall(r"password\s*=\s*'?([^'\s]+)", dsn)
    if password:
        secrets.append(str(password))
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


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
    from arb_pipeline.settings import child_environment

    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"the PostgreSQL DSN setting can't be parsed: {redact(str(exc).strip(), dsn)}"
        ) from None
    env = child_environment()
    if "password" in params:
        env["PGPASSWORD"] = str(params.pop("password"))
    return psycopg.conninfo.make_conninfo(**params), env
