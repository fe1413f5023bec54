"""Shared fixtures: one real PostgreSQL cluster per test session, fresh databases per test.

Service fixtures (sshd, SMTP) live in fixtures_services.py and are loaded as a plugin.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from arb_pipeline.dev.postgres import LocalPostgres
from arb_pipeline.schema.migrate import apply_migrations

pytest_plugins = ["arb_pipeline_tests.fixtures_services", "arb_pipeline_tests.demo_fixture"]

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


def _fresh_db(pg: LocalPostgres, role: str) -> str:
    import psycopg

    name = f"{role}_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "template_{role}"')
    return pg.dsn(name)


@pytest.fixture
def sender_db(pg_cluster) -> str:
    """DSN of a new, migrated, empty sender database."""
    return _fresh_db(pg_cluster, "sender")


@pytest.fixture
def receiver_db(pg_cluster) -> str:
    """DSN of a new, migrated, empty receiver database."""
    return _fresh_db(pg_cluster, "receiver")
