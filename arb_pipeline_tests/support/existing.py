"""Servers the project did not create: databases built from Django-style DDL (support/django_ddl/,
support/second_app/), filled the way the old tool filled a receiver, and compared before/after."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.quote import quote_ident

HERE = Path(__file__).resolve().parent
TRANSAPP_DDL = HERE / "django_ddl" / "transapp.sql"
TRANSAPPVIZ_DDL = HERE / "django_ddl" / "transappviz_extra.sql"
ROLLBACK_SQL = HERE.parents[1] / "deploy" / "sql" / "rollback.sql"
_dbs = itertools.count()


def django_db(pg, prefix: str, *ddl: Path) -> str:
    """A new database with nothing of the project's in it, built by ``psql -f`` of each DDL file."""
    dsn = pg.create_database(f"{prefix}_{os.getpid()}_{next(_dbs)}", drop_existing=True)
    for path in ddl:
        done = subprocess.run(
            [pg.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), dsn],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
    return dsn


def arb(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The `arb` command line in a subprocess, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "arb_pipeline.cli.main", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def schema_dump(pg, dsn: str, table_pattern: str | None = None) -> str:
    """``pg_dump --schema-only`` of the tables matching the pattern (default: the whole database):
    schemas, columns, types, defaults, constraints, indexes, comments and triggers, as text to
    compare before and after."""
    pattern = ["-t", table_pattern] if table_pattern else []
    done = subprocess.run(
        [pg.tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", *pattern, dsn],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # pg_dump 15+ prints a random \restrict token per run; it says nothing about the schema.
    return "\n".join(
        line for line in done.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def columns_of(dsn: str, table: str) -> list[str]:
    with connect(dsn) as conn:
        return [d.name for d in conn.execute(f"SELECT * FROM {quote_ident(table)} LIMIT 0").description]


def copy_rows(sender_dsn: str, receiver_dsn: str, tables: list[str]) -> dict[str, int]:
    """What the old tool did: every row of ``tables`` copied to the receiver as is (its columns
    only; the receiver's own columns take what the caller sets), in one transaction."""
    counts = {}
    with connect(sender_dsn) as s, connect(receiver_dsn) as r, r.transaction():
        for table in tables:
            cols = ", ".join(quote_ident(c) for c in columns_of(sender_dsn, table))
            t = quote_ident(table)
            with s.cursor().copy(f"COPY {t} ({cols}) TO STDOUT") as out:
                with r.cursor().copy(f"COPY {t} ({cols}) FROM STDIN") as into:
                    for block in out:
                        into.write(block)
            counts[table] = r.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    return counts


def sequences(dsn: str) -> dict[str, int]:
    """Each serial sequence of schema public and the next id it would hand out."""
    with connect(dsn) as conn:
        names = [
            r[0] for r in conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        ]
        out = {}
        for name in names:
            last, called = conn.execute(f"SELECT last_value, is_called FROM {quote_ident(name)}").fetchone()
            out[name] = last + 1 if called else last
        return out


def rollback(pg, dsn: str, role: str) -> subprocess.CompletedProcess:
    """deploy/sql/rollback.sql as the runbook runs it, as the database's owner."""
    return subprocess.run(
        [
            pg.tool("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"role={role}",
            "-f",
            str(ROLLBACK_SQL),
            dsn,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
