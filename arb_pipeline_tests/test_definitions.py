"""Both code locations load; schedules pick the right windows; the CLI backfills."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.dagster_cli import DAGSTER, materialize

REPO = Path(__file__).resolve().parents[1]
UTC = timezone.utc


def test_both_code_locations_validate():
    env = {
        **os.environ,
        "ARB_SENDER_DSN": "host=127.0.0.1 dbname=x",
        "ARB_RECEIVER_DSN": "host=127.0.0.1 dbname=y",
    }
    done = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "All code locations passed validation" in done.stderr + done.stdout


def test_partial_schedule_requests_the_window_that_just_closed():
    from arb_pipeline.sender.definitions import defs

    schedule = defs.resolve_schedule_def("partial_backup_schedule")
    assert schedule.cron_schedule == "1-59/5 * * * *"  # 1 minute of safety delay after each window
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        tick = datetime(2026, 11, 26, 10, 6, tzinfo=UTC)
        result = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
            )
        )
    [request] = result.run_requests
    assert request.partition_key == "2026-11-26-10-00" and request.run_key == "partial-2026-11-26-10-00"


def test_complete_schedule_runs_at_0330_santiago_for_the_day_that_closed():
    from arb_pipeline.sender.definitions import defs

    schedule = defs.resolve_schedule_def("complete_backup_schedule")
    assert schedule.cron_schedule == "30 3 * * *" and schedule.execution_timezone == "America/Santiago"
    with dg.instance_for_test() as instance:
        tick = datetime(2026, 11, 26, 6, 30, tzinfo=UTC)  # 03:30 in Santiago (UTC-3 in summer)
        result = schedule.evaluate_tick(
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
            )
        )
    assert [r.partition_key for r in result.run_requests] == ["2026-11-25"]


def test_loads_hold_the_receiver_db_pool_and_backups_their_own():
    from arb_pipeline.receiver.definitions import defs as receiver
    from arb_pipeline.sender.definitions import defs as sender

    pools = {}
    for defs in (sender, receiver):
        for assets in defs.assets:
            pools[assets.node_def.name] = assets.node_def.pool
    postprocess = pools.pop("postprocess")  # one step computes the six postprocess assets
    ops = {
        n: pools.pop(n) for n in list(pools) if "__ops__" in n
    }  # drill, connectivity: outside the load pools
    assert ops == {"receiver__ops__restore_drill": None, "sender__ops__receiver_connectivity": None}
    assert pools == {
        "partial_backup": "sender_partial",
        "complete_backup": "sender_complete",
        "load_partial": "receiver_db",
        "load_complete": "receiver_db",
    }
    assert postprocess == "receiver_db"
    assert (
        len([k for k in receiver.resolve_asset_graph().get_all_asset_keys() if k.path[1] == "postprocess"])
        == 6
    )
    for name in ("inbox_sensor", "postprocess_sensor"):
        assert receiver.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_cli_backfill_of_a_past_window_gives_the_scheduled_runs_backup(sender_db, tmp_path):
    """`dagster asset materialize --partition KEY` produces the same files as a run
    of the same partition made from Python (the schedule's way)."""
    from arb_pipeline.sender.assets import partial_backup
    from arb_pipeline.sender.resources import (
        BackupDestination,
        BackupPublisher,
        SenderDatabase,
        SenderSettings,
    )

    media = tmp_path / "media"
    media.mkdir()
    with connect(sender_db) as conn:
        seed_reference(conn, seed=5, scale=0.02)
    with Workload(sender_db, media, seed=5, clock_offset=timedelta(minutes=-30)) as work:
        key = PARTIAL.get_partition_key_for_timestamp(work.app_now().timestamp())
        for _ in range(80):
            work.step()
    inbox = tmp_path / "inbox"
    dest = BackupDestination(kind="local", local_dir=str(inbox))
    assert dg.materialize(
        [partial_backup],
        partition_key=key,
        resources={
            "sender_db": SenderDatabase(dsn=sender_db),
            "sender_settings": SenderSettings(media_dir=str(media), staging_dir=str(tmp_path / "s1")),
            "backup_destination": dest,
            "backup_publisher": BackupPublisher(destination=dest),
        },
    ).success
    env = {
        **os.environ,
        "ARB_SENDER_DSN": sender_db,
        "ARB_TRANSPORT": "local",
        "ARB_INBOX_DIR": str(inbox),
        "ARB_SENDER_MEDIA_DIR": str(media),
        "ARB_STAGING_DIR": str(tmp_path / "s2"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    materialize("sender", "sender_partial", key, env)
    scheduled, backfilled = (
        Manifest.from_json((p / MANIFEST_NAME).read_bytes())
        for p in sorted((inbox / "partial").iterdir(), key=lambda p: p.stat().st_mtime)
    )
    assert scheduled.partition_key == backfilled.partition_key == key
    assert [(f.name, f.sha256) for f in scheduled.files] == [(f.name, f.sha256) for f in backfilled.files]
    assert sum(f.rows for f in backfilled.table_files()) > 0
