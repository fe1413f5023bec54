"""Checks of the Dagster instance: the packages in lockstep, ``DAGSTER_HOME`` and its
storage (SQLite, or the PostgreSQL database production uses).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

from arb_pipeline.ops.preflight.item import FAIL, OK, WARN, Item, problem_items
from arb_pipeline.settings import DagsterInstanceSettings, SettingError


def dagster_items() -> Iterator[Item]:
    problems: list[SettingError] = []
    instance = DagsterInstanceSettings.from_env(problems=problems)
    yield from problem_items(problems)
    versions = {}
    for dist in ("dagster", "dagster-webserver", "dagster-postgres"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    core = versions["dagster"] or "?"
    lib = versions["dagster-postgres"]
    ok_pair = False
    if lib and core != "?":
        c, l_ = core.split("."), lib.split(".")
        ok_pair = len(c) >= 3 and len(l_) >= 3 and int(l_[1]) == int(c[1]) + 16 and l_[2] == c[2]
    text = ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items())
    yield Item(
        "dagster packages",
        OK if ok_pair and versions["dagster-webserver"] == core else FAIL,
        text,
        "" if ok_pair else "install the locked versions: .venv/bin/pip install -r requirements.lock",
    )
    home = instance.home
    if not home:
        yield Item(
            "DAGSTER_HOME",
            WARN,
            "not set: the CLI uses a temporary instance, wiped on exit",
            "set DAGSTER_HOME to a folder holding dagster.yaml (deploy/dagster.postgres.yaml in production)",
        )
        return
    config = Path(home) / "dagster.yaml"
    if not config.is_file():
        yield Item(
            "DAGSTER_HOME",
            WARN,
            f"{home} has no dagster.yaml: SQLite storage, default limits",
            f"cp deploy/dagster.postgres.yaml {config}",
        )
        return
    text = config.read_text()
    if "postgres" not in text:
        yield Item(
            "DAGSTER_HOME",
            WARN,
            f"{config}: SQLite storage (fine for one machine)",
            "production uses dagster-postgres storage: deploy/dagster.postgres.yaml",
        )
        return
    yield from _dagster_postgres(config, instance)


def _dagster_postgres(config: Path, instance: DagsterInstanceSettings) -> Iterator[Item]:
    import psycopg

    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn

    needed = (("DAGSTER_PG_HOST", instance.pg_host), ("DAGSTER_PG_USERNAME", instance.pg_username))
    missing = [name for name, value in (*needed, ("DAGSTER_PG_DB", instance.pg_db)) if not value]
    if missing:
        yield Item(
            "DAGSTER_HOME",
            FAIL,
            f"{config} uses PostgreSQL storage but {', '.join(missing)} not set",
            "set the DAGSTER_PG_* variables (the password in DAGSTER_PG_PASSWORD) for every Dagster service",
        )
        return
    dsn = psycopg.conninfo.make_conninfo(
        host=instance.pg_host,
        port=instance.pg_port,
        user=instance.pg_username,
        password=instance.pg_password,
        dbname=instance.pg_db,
    )
    try:
        with connect(dsn):
            pass
    except ArbError as exc:
        yield Item(
            "DAGSTER_HOME",
            FAIL,
            f"{config}: {exc}",
            "create the Dagster database and role (docs/production.md, step 3)",
        )
        return
    yield Item("DAGSTER_HOME", OK, f"{config}: PostgreSQL storage at {describe_dsn(dsn)}")
