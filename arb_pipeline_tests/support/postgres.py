"""PostgreSQL for the tests (a pytest plugin): one real cluster per session, fresh databases.

- ``pg_cluster`` (session): a LocalPostgres with migrated template databases for both roles.
- ``sender_db`` / ``receiver_db`` (function): the DSN of a new, migrated, empty database.
- ``logical_pg_cluster`` (session) / ``logical_sender_db`` (function): the same for change
  capture, on a second cluster with ``wal_level=logical`` (sender template only).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from arb_pipeline.dev.postgres import LocalPostgres
from arb_pipeline.schema.migrate import apply_migrations

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    base = Path(tempfile.mkdtemp(prefix="arb-pg-"))
    pg = LocalPostgres(base).start()
    try:
        for role in ("sender", "receiver"):
            apply_migrations(pg.create_database(f"template_{role}", drop_existing=True), role)
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def logical_pg_cluster():
    base = Path(tempfile.mkdtemp(prefix="arb-pg-logical-"))
    # synchronous_commit on: a committed transaction is in flushed WAL, which is all decoding reads
    pg = LocalPostgres(base, settings={"wal_level": "logical", "synchronous_commit": "on"}).start()
    try:
        apply_migrations(pg.create_database("template_sender", drop_existing=True), "sender")
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def fresh_db(pg: LocalPostgres, role: str) -> str:
    """DSN of a new, migrated, empty database for ``role`` ("sender" or "receiver")."""
    name = f"{role}_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "template_{role}"')
    return pg.dsn(name)


def copy_db(pg: LocalPostgres, source_dsn: str, prefix: str = "copy") -> str:
    """CREATE DATABASE ... TEMPLATE: a frozen copy of a database (no session may be open on it)."""
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"
    source = psycopg.conninfo.conninfo_to_dict(source_dsn)["dbname"]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return pg.dsn(name)


@pytest.fixture
def sender_db(pg_cluster) -> str:
    """DSN of a new, migrated, empty sender database."""
    return fresh_db(pg_cluster, "sender")


@pytest.fixture
def logical_sender_db(logical_pg_cluster) -> str:
    """DSN of a new, migrated, empty sender database on the wal_level=logical cluster."""
    return fresh_db(logical_pg_cluster, "sender")


@pytest.fixture
def receiver_db(pg_cluster) -> str:
    """DSN of a new, migrated, empty receiver database."""
    return fresh_db(pg_cluster, "receiver")


@pytest.fixture
def zoned_receiver_db(receiver_db) -> str:
    """A receiver database holding the real zoning (EOD 2012, 866 zones), as `arb zones import` loads it."""
    from arb_pipeline.ops.zoning import bundled_zoning, import_zoning

    import_zoning(receiver_db, bundled_zoning())
    return receiver_db
