"""The sender's read-only role (deploy/sql/sender-role.sql) makes partial and complete
backups of an existing app database, and can write nothing."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline_tests.support.backups import complete_for_yesterday, make_partial, new_sender, wide_window
from arb_pipeline_tests.support.roles import make_sender_role, run_role_script
from arb_pipeline_tests.support.traffic import PARTIAL_OPS, traffic_at


def test_the_read_only_role_backs_up_and_writes_nothing(pg_cluster, tmp_path):
    owner_dsn, media, staging = new_sender(pg_cluster, tmp_path, seed=61)
    traffic_at(owner_dsn, media, 61, wide_window().start + timedelta(hours=1), PARTIAL_OPS, 40)
    _, reader_dsn = make_sender_role(pg_cluster, owner_dsn)

    partial = make_partial(reader_dsn, staging, media)
    complete = complete_for_yesterday(reader_dsn, staging, media)
    assert sum(e.rows for e in partial.manifest.table_files()) > 0
    assert {e.table for e in complete.manifest.table_files()} == set(current_catalog().table_names)

    with psycopg.connect(reader_dsn, autocommit=True) as conn:
        for statement in (
            'UPDATE "AndroidRequests_eventforbusv2" SET "phoneId" = "phoneId"',
            'DELETE FROM "AndroidRequests_report"',
            "CREATE TABLE arb_stray (id int)",
            "DELETE FROM arb_role_table",
        ):
            with pytest.raises(psycopg.Error):
                conn.execute(statement)


def test_the_script_refuses_the_apps_own_role_and_a_database_never_migrated(pg_cluster, tmp_path):
    owner_dsn, _, _ = new_sender(pg_cluster, tmp_path, seed=62)
    owner = psycopg.conninfo.conninfo_to_dict(owner_dsn)["user"]
    refused = run_role_script(pg_cluster, owner_dsn, owner, side="sender")
    assert refused.returncode != 0 and "must own nothing" in refused.stderr

    bare = pg_cluster.create_database(f"bare_{tmp_path.name[-20:]}", drop_existing=True)
    refused = run_role_script(pg_cluster, bare, "arb_sender_bare", side="sender")
    assert refused.returncode != 0 and "arb migrate --role sender" in refused.stderr
