"""Checks of this server itself: its databases, folders and programs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from arb_pipeline.ops.preflight.item import FAIL, OK, Item, mb


def database_items(name: str, dsn: str, role: str) -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn
    from arb_pipeline.schema import compat
    from arb_pipeline.schema.migrate import plan_migrations

    if not dsn:
        yield Item(
            name,
            FAIL,
            "not set",
            f"set {name} to the {role} database's libpq DSN, e.g. "
            "'host=127.0.0.1 dbname=transapp user=arb' (password via ~/.pgpass or the DSN)",
        )
        return
    try:
        with connect(dsn) as conn:
            version = conn.info.server_version
            detail = f"{describe_dsn(dsn)}: PostgreSQL {version // 10000}.{version % 10000}"
            try:
                plan = plan_migrations(conn, role)
            except ArbError as exc:  # tables missing, an edited migration: the message says what to do
                yield Item(name, FAIL, f"{detail}; {exc}", "see the message", {"server_version": version})
                return
            unfit = [f for f in compat.findings(conn, role, plan.catalog) if f.level == compat.FAIL]
    except ArbError as exc:
        yield Item(name, FAIL, str(exc), "start PostgreSQL or fix the DSN")
        return
    if not plan.up_to_date:
        todo = plan.lines()
        yield Item(
            name,
            FAIL,
            f"{detail}; {len(todo)} schema change(s) pending ({todo[0]} ...)",
            f"arb migrate --role {role} --dry-run, then arb migrate --role {role}",
            {"server_version": version},
        )
    elif unfit:
        yield Item(
            name,
            FAIL,
            f"{detail}; {unfit[0].table}: {unfit[0].detail}"
            + (f" (and {len(unfit) - 1} more)" if len(unfit) > 1 else ""),
            f"{unfit[0].fix}; `arb migrate --role {role} --dry-run` lists every table's",
            {"server_version": version},
        )
    else:
        yield Item(name, OK, f"{detail}; migrations up to date", metrics={"server_version": version})


def drill_items(dsn: str) -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn

    if not dsn:
        yield Item(
            "ARB_DRILL_DSN",
            FAIL,
            "not set: the restore drill can't run",
            "set ARB_DRILL_DSN to a maintenance connection (dbname=postgres) of a role with CREATEDB",
        )
        return
    try:
        with connect(dsn) as conn:
            can = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except ArbError as exc:
        yield Item("ARB_DRILL_DSN", FAIL, str(exc), "fix the DSN or start the server")
        return
    if not (can and can[0]):
        yield Item(
            "ARB_DRILL_DSN",
            FAIL,
            f"{describe_dsn(dsn)}: the role may not create databases",
            "ALTER ROLE <role> CREATEDB (the drill creates and drops a scratch database)",
        )
    else:
        yield Item("ARB_DRILL_DSN", OK, f"{describe_dsn(dsn)}: may create the scratch database")


def folder_item(name: str, path: str, *, writable: bool, min_free: int = 0, create_hint: str = "") -> Item:
    if not path:
        return Item(name, FAIL, "not set", f"set {name}")
    p = Path(path)
    if not p.is_dir():
        return Item(
            name,
            FAIL,
            f"{p} does not exist or is not a folder",
            create_hint or f"mkdir -p {p} and give it to the pipeline's user",
        )
    if not os.access(p, os.R_OK | os.X_OK) or (writable and not os.access(p, os.W_OK)):
        return Item(
            name,
            FAIL,
            f"{p} is not {'writable' if writable else 'readable'} by uid {os.getuid()}",
            "chown the folder to the pipeline's user",
        )
    free = shutil.disk_usage(p).free
    if min_free and free < min_free:
        return Item(
            name,
            FAIL,
            f"{p}: {mb(free)} free, below {mb(min_free)}",
            "free space on that volume (or lower ARB_MIN_FREE_MB)",
            {"free_bytes": free},
        )
    return Item(name, OK, f"{p} ({mb(free)} free)", metrics={"free_bytes": free})


def staging_item(name: str, path: str) -> Item:
    """A working folder the pipeline creates itself when missing: its parent must be writable then."""
    if Path(path).exists():
        return folder_item(name, path, writable=True)
    parent = Path(path).parent
    if os.access(parent, os.W_OK):
        return Item(name, OK, f"{path} will be created in {parent}")
    return Item(
        name,
        FAIL,
        f"{path} does not exist and {parent} is not writable",
        f"mkdir -p {path} and give it to the pipeline's user",
    )


def program_item(name: str, program: str, why: str, fix: str) -> tuple[Item, str | None]:
    found = shutil.which(program)
    if not found:
        return Item(name, FAIL, f"{program!r} not found ({why})", fix), None
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Item(name, FAIL, f"{found} does not run: {exc}", fix), None
    return Item(name, OK, f"{found}: {out.splitlines()[0] if out else 'found'}"), out


def pg_major(version_text: str | None) -> int | None:
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text or "")
    return int(match.group(1)) if match else None


def pg_client_items(dsn: str, pg_dump: str) -> Iterator[Item]:
    """pg_dump (not older than the server: it dumps the completes' schema) and the psql beside it."""
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect

    server_major = None
    try:
        if dsn:
            with connect(dsn) as conn:
                server_major = conn.info.server_version // 10000
    except ArbError:
        pass
    item, out = program_item(
        "ARB_PG_DUMP",
        pg_dump,
        "dumps the schema of complete backups",
        "install postgresql-client of the server's major version, or set ARB_PG_DUMP to its pg_dump",
    )
    major = pg_major(out)
    if item.status == OK and server_major and major and major < server_major:
        item = Item(
            "ARB_PG_DUMP",
            FAIL,
            f"{item.detail}: older than the server ({server_major})",
            f"install postgresql-client-{server_major} and point ARB_PG_DUMP at its pg_dump",
        )
    yield item
    psql = Path(pg_dump).with_name("psql") if Path(pg_dump).name != pg_dump else Path("psql")
    yield program_item(
        "psql (beside pg_dump)",
        str(psql),
        "streams complete backups' tables",
        "install postgresql-client (psql comes with pg_dump)",
    )[0]
