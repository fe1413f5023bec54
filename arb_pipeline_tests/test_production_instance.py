"""The production instance (deploy/dagster.postgres.yaml): a real materialization with
`dagster asset materialize` on dagster-postgres storage, run queue limits and pools."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.dagster_cli import materialize

REPO = Path(__file__).resolve().parents[1]


def test_a_materialization_on_the_postgres_backed_instance(pg_cluster, sender_db, tmp_path, monkeypatch):
    db = f"dagster_{os.getpid()}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
        conn.execute(f'CREATE DATABASE "{db}"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    instance_env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_cluster.port),
        "DAGSTER_PG_USERNAME": pg_cluster.user,
        "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        "DAGSTER_PG_DB": db,
    }

    media = tmp_path / "media"
    media.mkdir()
    with connect(sender_db) as conn:
        seed_reference(conn, seed=4, scale=0.02)
    with Workload(sender_db, media, seed=4, clock_offset=timedelta(minutes=-30)) as work:
        key = PARTIAL.get_partition_key_for_timestamp(work.app_now().timestamp())
        for _ in range(40):
            work.step()
    env = {
        **os.environ,
        **instance_env,
        "ARB_SENDER_DSN": sender_db,
        "ARB_TRANSPORT": "local",
        "ARB_INBOX_DIR": str(tmp_path / "inbox"),
        "ARB_SENDER_MEDIA_DIR": str(media),
        "ARB_STAGING_DIR": str(tmp_path / "staging"),
    }
    materialize("sender", "sender_partial", key, env)

    for name, value in instance_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        [run] = instance.get_run_records()
        assert run.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey(["sender", "partial", "backup"]))
        assert event is not None and event.dagster_event.partition == key
        assert instance.event_log_storage.get_pool_limits()[0].limit == 1  # the step's pool took one slot
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config.max_concurrent_runs == 4
        assert {"key": "arb/db-load", "limit": 1} in config.run_queue_config.tag_concurrency_limits
    with psycopg.connect(pg_cluster.dsn(db)) as conn:  # the run is in PostgreSQL, not in a SQLite file
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert not (home / "history").exists()
