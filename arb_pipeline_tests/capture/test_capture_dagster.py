"""Capture mode through the real machinery (issue 18, the wiring slice): ARB_PARTIAL_SOURCE=capture,
the sender's assets materialized by Dagster on a wal_level=logical sender, the receiver's inbox
sensor loading what they published, parity for every replicated table."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.slot import slot_status
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher
from arb_pipeline.transport.base import TransportError
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.backups import P, new_sender
from arb_pipeline_tests.support.capture import PUBLICATION, capture_sender
from arb_pipeline_tests.support.receiver import Receiver, tick
from arb_pipeline_tests.support.sender import sender_resources
from arb_pipeline_tests.support.traffic import traffic

UTC = timezone.utc
TOKEN = P + "activetoken"


@pytest.fixture
def capture_world(logical_pg_cluster, tmp_path):
    """(dsn, media, resources, slot): a seeded sender set up as `arb capture setup` does, and the
    sender's resources in capture mode publishing into a local inbox."""
    with capture_sender(logical_pg_cluster, tmp_path, seed=13) as (dsn, media, staging, slot):
        destination = BackupDestination(kind="local", local_dir=str(tmp_path / "inbox"))
        resources = sender_resources(
            dsn,
            media,
            staging,
            destination,
            sender_id="capture-e2e",
            partial_source="capture",
            capture_slot=slot,
            capture_publication=PUBLICATION,
        )
        yield dsn, media, resources, slot


class _Crashing(LocalFolderTransport):
    def __init__(self, root: Path, after_manifest: bool):
        super().__init__(root)
        self.after_manifest = after_manifest

    def publish(self, local_path, remote_name):
        if remote_name.endswith(MANIFEST_NAME) and not self.after_manifest:
            raise TransportError("the connection dropped before the manifest")
        super().publish(local_path, remote_name)
        if remote_name.endswith(MANIFEST_NAME):
            raise TransportError("the run died right after publishing the manifest")


class CrashingInbox(BackupDestination):
    """The local inbox, with the run dying just before or just after the manifest (the
    commit marker) is published: either way before the asset advances the slot."""

    after_manifest: bool = False

    def open(self, retries=None):
        return _Crashing(Path(self.local_dir), self.after_manifest)


def _silent_changes(dsn, work) -> int:
    """The two changes timestamp windows miss: a bulk update leaving timeStamp alone, and a delete."""
    assert work.mark_declined_broken() >= 0
    with connect(dsn) as conn:
        purged = conn.execute(f'DELETE FROM "{TOKEN}" WHERE id % 2 = 0').rowcount
        conn.commit()
    return purged


def _wait_until_closed(key: str) -> None:
    """Captured windows are built once closed: wait out the rest of ``key``'s window (up to
    ARB_PARTIAL_MINUTES), as the schedule does."""
    end = PARTIAL.time_window_for_partition_key(key).end
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()) + 1)


def _materialization(instance, key: list[str], partition: str) -> dict:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
    ).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_captured_partial_through_dagster_loads_and_every_table_is_at_parity(
    capture_world, receiver_db, tmp_path
):
    from arb_pipeline.dev.generator.workload import Workload

    dsn, media, resources, slot = capture_world
    receiver = Receiver(receiver_db, tmp_path / "inbox", tmp_path / "rx-media", tmp_path / "quarantine")
    receiver.media.mkdir()
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    with (
        dg.instance_for_test() as sender,
        dg.instance_for_test() as rx,
        Workload(dsn, media, seed=13) as work,
    ):
        traffic(work, 60)
        done = dg.materialize([complete_backup], partition_key=day, resources=resources, instance=sender)
        assert done.success
        pin = _materialization(sender, ["sender", "complete", "backup"], day)["capture_lsn"]

        traffic(work, 120)  # the app's traffic, and within the same window the silent changes
        assert _silent_changes(dsn, work) > 0
        traffic(work, 20)
        key = PARTIAL.get_partition_key_for_timestamp(datetime.now(UTC).timestamp())
        _wait_until_closed(key)
        with connect(dsn, autocommit=True) as conn:
            start = slot_status(conn, slot).confirmed_flush_lsn
        # The run dies before, then after, publishing the manifest: each time the slot stays where
        # it was; the second left a whole backup in the inbox.
        for after_manifest in (False, True):
            crashing = CrashingInbox(
                kind="local", local_dir=str(tmp_path / "inbox"), after_manifest=after_manifest
            )
            broken = {
                **resources,
                "backup_destination": crashing,
                "backup_publisher": BackupPublisher(destination=crashing),
            }
            failed = dg.materialize(
                [partial_backup], partition_key=key, resources=broken, instance=sender, raise_on_error=False
            )
            assert not failed.success
            with connect(dsn, autocommit=True) as conn:
                assert slot_status(conn, slot).confirmed_flush_lsn == start
        assert len(list((tmp_path / "inbox" / "partial").glob("*/manifest.json"))) == 1
        built = dg.materialize([partial_backup], partition_key=key, resources=resources, instance=sender)
        assert built.success
        meta = _materialization(sender, ["sender", "partial", "backup"], key)
        assert parse_lsn(meta["from_lsn"]) == start  # the same changes, read again
        assert meta["source"] == "capture" and meta["transactions"] > 0
        assert parse_lsn(meta["from_lsn"]) < parse_lsn(pin) < parse_lsn(meta["to_lsn"])
        assert meta["changes"][TOKEN]["deleted_keys"] > 0  # the purge: no asset of its own
        with connect(dsn, autocommit=True) as conn:  # advanced once the manifest was published
            assert slot_status(conn, slot).confirmed_flush_lsn == parse_lsn(meta["to_lsn"])

        # The partial waits for a complete pinned after its slot started (capture/chain.py): the
        # complete loads first, the partial on the next tick.
        result, outcomes = tick(rx, receiver.resources())
        assert [r.job_name for r, _ in outcomes] == ["load_complete_job"] and outcomes[0][1].success
        result, outcomes = tick(rx, receiver.resources(), result.cursor)
        assert {r.job_name for r, _ in outcomes} == {"load_partial_job"}
        assert all(o.success for _, o in outcomes)
        report = compare_tables(dsn, receiver.dsn)  # every replicated table, no complete in between
        assert report.ok, report.format()
        with connect(receiver.dsn) as conn:
            rows = conn.execute(
                "SELECT outcome, rows_deleted, capture_lsn::text FROM arb_loaded_backup "
                "WHERE kind = 'partial' ORDER BY loaded_at"
            ).fetchall()
        # the crashed run's backup and the re-run's: the same changes, applied once
        assert [r[0] for r in rows] == ["loaded", "loaded"] and rows[0][1] > 0 and rows[1][1] == 0
        assert rows[0][2] == rows[1][2] == meta["to_lsn"]

        # Re-materializing the window once the slot has moved past it: refused, with the reason.
        again = dg.materialize(
            [partial_backup], partition_key=key, resources=resources, instance=sender, raise_on_error=False
        )
        assert not again.success
        failure = next(e for e in again.all_events if e.is_step_failure)
        assert "moved past them" in failure.step_failure_data.error.to_string()


def test_capture_mode_without_a_slot_names_arb_capture_setup(logical_pg_cluster, tmp_path):
    dsn, media, staging = new_sender(logical_pg_cluster, tmp_path, seed=3)
    destination = BackupDestination(kind="local", local_dir=str(tmp_path / "inbox"))
    resources = sender_resources(
        dsn, media, staging, destination, partial_source="capture", capture_slot="arb_no_such_slot"
    )
    key = PARTIAL.get_last_partition_key()
    result = dg.materialize([partial_backup], partition_key=key, resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "arb capture setup" in failure.step_failure_data.error.to_string()
    assert not (tmp_path / "inbox").exists()  # nothing published
