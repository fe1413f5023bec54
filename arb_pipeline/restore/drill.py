"""The restore drill: prove the newest complete backup restores with standard tools.

It does what an admin would do in a disaster (docs/backup-format.md, "Restore a complete
backup with standard tools"): create an empty database, run the backup's ``restore.sql``
with ``psql`` from the backup's folder, then runs smoke queries (every table's row count
and digest equal the manifest's) and drops the database. The time and size are the drill's result.

Running a script that came from the sender is the one place where the receiver feeds
sender-made text to a program, so it is fenced in:

- ``restore.sql`` must consist only of the lines the sender's ``backup._restore_script``
  writes (comments, ``\\ir schema.sql``, ``SET search_path``, ``DROP NOT NULL``,
  ``\\copy ... FROM PROGRAM 'zstd -dcq tables/<table>.copy.zst'`` for the manifest's
  tables, ``setval``), checked line by line; anything else refuses the drill;
- ``schema.sql`` may hold no backslash outside pg_dump's ``\\restrict`` lines, so psql
  meets no meta-command (no ``\\!``, no ``\\copy ... PROGRAM``) in it;
- the files are verified against the manifest (sizes, sha256) first;
- it runs in a scratch database as a role that is not a superuser (``ARB_DRILL_DSN``:
  a maintenance connection of a role with CREATEDB), so its SQL can reach nothing else.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from arb_pipeline.errors import ArbError, ConfigError
from arb_pipeline.package.manifest import Manifest
from arb_pipeline.package.verify import verify_files
from arb_pipeline.pg.connect import client_program_args, connect, describe_dsn
from arb_pipeline.pg.rowhash import table_fingerprint
from arb_pipeline.receive.inbox import Pending, find_published

SCRATCH_PREFIX = "arb_drill_"
_IDENT = r'"[A-Za-z0-9_]+"'
_RESTORE_LINES = [
    re.compile(r"--[^\n]*"),
    re.compile(r"\\ir schema\.sql"),
    re.compile(r"SET search_path = public;"),
    re.compile(rf"ALTER TABLE (?P<table>{_IDENT}) ALTER COLUMN {_IDENT} DROP NOT NULL;"),
    re.compile(
        rf"\\copy (?P<table>{_IDENT}) \({_IDENT}(, {_IDENT})*\) FROM PROGRAM "
        r"'zstd -dcq tables/(?P<file>[A-Za-z0-9_]+)\.copy\.zst'"
    ),
    re.compile(
        rf"SELECT setval\('[A-Za-z0-9_.\"]+', max\({_IDENT}\)\) FROM (?P<table>{_IDENT}) "
        rf"HAVING max\({_IDENT}\) IS NOT NULL;"
    ),
]


class DrillError(ArbError):
    """The drill failed: the backup did not restore, or restored wrong."""


@dataclass
class DrillResult:
    backup_id: str
    snapshot_time: datetime
    database: str
    restore_seconds: float
    smoke_seconds: float
    backup_bytes: int
    database_bytes: int
    tables: int
    rows: int
    fingerprints_checked: int

    @property
    def backup_age_hours(self) -> float:
        return (datetime.now(timezone.utc) - self.snapshot_time).total_seconds() / 3600


def latest_complete(inbox: Path) -> Pending | None:
    """The newest complete backup in the inbox (by snapshot time)."""
    published, _bad = find_published(Path(inbox))
    completes = [p for p in published if p.kind == "complete"]
    return max(completes, key=lambda p: p.snapshot_time) if completes else None


def check_restore_script(backup_dir: Path, manifest: Manifest) -> None:
    """Refuse a restore.sql or schema.sql that holds anything the sender doesn't write."""
    tables = {f.table for f in manifest.table_files()}
    restore = (backup_dir / "restore.sql").read_text(encoding="utf-8")
    for n, line in enumerate(restore.splitlines(), 1):
        if not line.strip():
            continue
        match = next((m for p in _RESTORE_LINES if (m := p.fullmatch(line))), None)
        named = match and match.groupdict().get("table")
        file = match and match.groupdict().get("file")
        if match is None or (named and named.strip('"') not in tables) or (file and file != named.strip('"')):
            raise DrillError(
                f"restore.sql of backup {manifest.backup_id}, line {n}, is not a line arb_pipeline "
                f"writes ({line[:120]!r}); the drill refuses to run it. Quarantine the backup and "
                "check the sender"
            )
    schema = (backup_dir / "schema.sql").read_text(encoding="utf-8")
    for n, line in enumerate(schema.splitlines(), 1):
        if "\\" in line and not re.fullmatch(r"\\(un)?restrict [A-Za-z0-9]+", line):
            raise DrillError(
                f"schema.sql of backup {manifest.backup_id}, line {n}, holds a backslash (a psql "
                f"meta-command?): {line[:120]!r}; the drill refuses to run it"
            )


def _scratch_dsn(maintenance_dsn: str, name: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(maintenance_dsn)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**params)


def _drop(conn, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run_drill(
    backup_dir: Path,
    maintenance_dsn: str,
    *,
    psql: str = "psql",
    timeout: float = 6 * 3600,
    allow_superuser: bool = False,
) -> DrillResult:
    """Restore one complete backup into a scratch database, check it, drop it."""
    backup_dir = Path(backup_dir)
    if not maintenance_dsn:
        raise ConfigError(
            "ARB_DRILL_DSN is not set: set it to a maintenance connection (dbname=postgres) of a "
            "role with CREATEDB that is not a superuser"
        )
    manifest = verify_files(backup_dir)
    if manifest.kind != "complete" or manifest.file("restore") is None or manifest.file("schema") is None:
        raise DrillError(
            f"backup {manifest.backup_id} is not a complete backup with restore.sql and schema.sql"
        )
    check_restore_script(backup_dir, manifest)
    name = f"{SCRATCH_PREFIX}{datetime.now(timezone.utc):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"
    with connect(maintenance_dsn, autocommit=True, application_name="arb_drill") as admin:
        role = admin.execute(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if role and role[0] and not allow_superuser:
            raise ConfigError(
                f"ARB_DRILL_DSN ({describe_dsn(maintenance_dsn)}) logs in as a superuser; the drill "
                "runs SQL that came from the sender, so give it a role with only CREATEDB: "
                "CREATE ROLE arb_drill LOGIN CREATEDB"
            )
        if role and not (role[0] or role[1]):
            raise ConfigError(
                f"the role of ARB_DRILL_DSN ({describe_dsn(maintenance_dsn)}) may not create "
                "databases: ALTER ROLE <role> CREATEDB"
            )
        for (old,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s AND "
            "pg_get_userbyid(datdba) = current_user",
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
        ).fetchall():
            _drop(admin, old)  # left by a drill that was killed
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
        )
        try:
            scratch = _scratch_dsn(maintenance_dsn, name)
            conninfo, env = client_program_args(scratch)
            t0 = time.perf_counter()
            try:
                done = subprocess.run(
                    [
                        psql,
                        "-X",
                        "-q",
                        "-v",
                        "ON_ERROR_STOP=1",
                        "--single-transaction",
                        "-d",
                        conninfo,
                        "-f",
                        "restore.sql",
                    ],
                    cwd=backup_dir,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except FileNotFoundError:
                raise ConfigError(
                    f"psql not found at {psql!r}: install postgresql-client or set ARB_PSQL"
                ) from None
            except subprocess.TimeoutExpired:
                raise DrillError(f"restoring {manifest.backup_id} took more than {timeout:.0f} s") from None
            restore_seconds = time.perf_counter() - t0
            if done.returncode != 0:
                raise DrillError(
                    f"psql could not restore backup {manifest.backup_id} into a scratch database "
                    f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
                )
            t1 = time.perf_counter()
            rows, checked = _smoke(scratch, manifest)
            smoke_seconds = time.perf_counter() - t1
            size = admin.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]
        finally:
            _drop(admin, name)
    return DrillResult(
        backup_id=manifest.backup_id,
        snapshot_time=manifest.snapshot_time,
        database=name,
        restore_seconds=restore_seconds,
        smoke_seconds=smoke_seconds,
        backup_bytes=sum(f.bytes for f in manifest.files if f.kind != "media"),
        database_bytes=int(size),
        tables=len(manifest.table_files()),
        rows=rows,
        fingerprints_checked=checked,
    )


def _smoke(dsn: str, manifest: Manifest) -> tuple[int, int]:
    """Every table's row count and (when the manifest has one) digest equal the manifest's."""
    total, checked, wrong = 0, 0, []
    with connect(dsn, application_name="arb_drill") as conn:
        for f in manifest.table_files():
            n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f.table))).fetchone()[0]
            total += n
            if n != f.rows:
                wrong.append(f"{f.table}: {n} rows restored, the manifest says {f.rows}")
                continue
            if f.fingerprint is not None:
                fp = table_fingerprint(conn, f.table, [c.name for c in f.columns], f.primary_key)
                checked += 1
                if fp.digest != f.fingerprint.digest:
                    wrong.append(
                        f"{f.table}: digest {fp.digest} restored, the manifest says {f.fingerprint.digest}"
                    )
        conn.rollback()
    if wrong:
        raise DrillError(
            f"backup {manifest.backup_id} restored, but differs from its manifest: " + "; ".join(wrong)
        )
    return total, checked
