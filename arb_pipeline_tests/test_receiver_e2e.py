"""End to end: sender assets -> real sshd -> inbox sensor -> loads, ending in parity."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline_tests.support.receiver import receiver_resources, tick
from arb_pipeline_tests.support.sender import sender_resources
from arb_pipeline_tests.support.services import sftp_destination

UTC = timezone.utc
pytestmark = pytest.mark.sshd


def sftp_sender_resources(dsn, media, staging, sshd, retries=2):
    return sender_resources(dsn, media, staging, sftp_destination(sshd, retries=retries), sender_id="e2e")


@pytest.fixture
def world(sender_db, receiver_db, tmp_path, sftp_inbox):
    sender_media = tmp_path / "sender-media"
    sender_media.mkdir()
    with connect(sender_db) as conn:
        seed_reference(conn, seed=11, scale=0.02)
    return {
        "sender_db": sender_db,
        "receiver_db": receiver_db,
        "sshd": sftp_inbox,
        "sender_media": sender_media,
        "receiver_media": tmp_path / "receiver-media",
        "inbox": Path(sftp_inbox.inbox_dir),
        "quarantine": tmp_path / "quarantine",
        "staging": tmp_path / "staging",
    }


def _publish_partial(w, key):
    assert dg.materialize(
        [partial_backup],
        partition_key=key,
        resources=sftp_sender_resources(w["sender_db"], w["sender_media"], w["staging"], w["sshd"]),
    ).success


def _publish_complete(w, day):
    assert dg.materialize(
        [complete_backup],
        partition_key=day,
        resources=sftp_sender_resources(w["sender_db"], w["sender_media"], w["staging"], w["sshd"]),
    ).success


def test_backups_flow_through_sftp_and_the_sensor_into_parity(world):
    w = world
    (w["receiver_media"]).mkdir()
    offset = timedelta(minutes=-20)  # the app writes in windows that have closed
    keys = []
    with Workload(w["sender_db"], w["sender_media"], seed=11, clock_offset=offset) as work:
        for _ in range(3):
            keys.append(PARTIAL.get_partition_key_for_timestamp(work.app_now().timestamp()))
            for _ in range(60):
                work.step()
            work.clock_offset += timedelta(minutes=5)
    for key in dict.fromkeys(keys):
        _publish_partial(w, key)
    _publish_complete(w, (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d"))
    resources = receiver_resources(w["receiver_db"], w["inbox"], w["receiver_media"], w["quarantine"])
    with dg.instance_for_test() as instance:
        result, outcomes = tick(instance, resources)
        assert [o[1].success for o in outcomes] == [True] * len(outcomes)
        # Oldest snapshot first: the partials of adjacent windows in one ranged run, each backup
        # its partition's materialization; then the complete taken after them, alone.
        assert [r.job_name for r, _ in outcomes] == ["load_partial_job", "load_complete_job"]
        ranged, complete = outcomes[0][0], outcomes[1][0]
        assert (ranged.partition_key_range.start, ranged.partition_key_range.end) == (keys[0], keys[-1])
        assert len(ranged.run_config["ops"]["load_partial"]["config"]["backup_ids"]) == len(set(keys))
        assert complete.run_key == complete.tags["arb/backup_id"]
        assert instance.get_materialized_partitions(dg.AssetKey(["receiver", "partial", "media"])) == set(
            keys
        )
        again, outcomes = tick(instance, resources, result.cursor)
        assert outcomes == [] and again.skip_reason
    report = compare_tables(w["sender_db"], w["receiver_db"])
    assert report.ok, report.format()
    assert compare_media(w["sender_media"], w["receiver_media"]).ok
    with connect(w["receiver_db"]) as conn:
        outcomes = dict(conn.execute("SELECT kind, count(*) FROM arb_loaded_backup GROUP BY kind").fetchall())
    assert outcomes == {"partial": len(set(keys)), "complete": 1}
