"""The pipeline's least-privilege roles, made with the production scripts (deploy/sql/<side>-role.sql)."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from arb_pipeline.pg.connect import connect

ROLE_SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "sql"
_roles = itertools.count()


def run_role_script(
    pg, admin_dsn: str, role: str | None, side: str = "receiver"
) -> subprocess.CompletedProcess:
    args = [pg.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"] + (["-v", f"role={role}"] if role else [])
    script = ROLE_SCRIPTS / f"{side}-role.sql"
    return subprocess.run(args + ["-f", str(script), admin_dsn], capture_output=True, text=True, timeout=120)


def dsn_as(dsn: str, user: str, password: str | None = None) -> str:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params.update(user=user, **({"password": password} if password else {}))
    return psycopg.conninfo.make_conninfo(**params)


def make_receiver_role(
    pg, admin_dsn: str, password: str | None = None, side: str = "receiver"
) -> tuple[str, str]:
    """Create the ``side``'s role with its script, as the admin; return (role, its DSN)."""
    role = f"arb_{side[0]}x_{os.getpid()}_{next(_roles)}"
    done = run_role_script(pg, admin_dsn, role, side)
    assert done.returncode == 0, done.stderr
    if password:
        with connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
    return role, dsn_as(admin_dsn, role, password)


def make_sender_role(pg, admin_dsn: str, password: str | None = None) -> tuple[str, str]:
    """The sender's read-only role (deploy/sql/sender-role.sql): (role, its DSN)."""
    return make_receiver_role(pg, admin_dsn, password, side="sender")
