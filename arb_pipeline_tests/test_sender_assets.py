"""The sender's Dagster layer: partial and complete backups materialized and published."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest
from arb_pipeline.package.reader import iter_table_lines
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher, SenderDatabase, SenderSettings
from arb_pipeline_tests.support.services import sftp_destination

UTC = timezone.utc


@pytest.fixture
def traffic(sender_db, tmp_path):
    """A seeded sender with a few minutes of app traffic; returns (dsn, media_dir, key)."""
    media = tmp_path / "sender-media"
    media.mkdir()
    with connect(sender_db) as conn:
        seed_reference(conn, seed=7, scale=0.02)
    # The app writes 6 minutes in the past, so its rows fall in a window that has closed.
    offset = timedelta(minutes=-6)
    with Workload(sender_db, media, seed=7, clock_offset=offset) as work:
        start = work.app_now()
        for _ in range(150):
            work.step()
    key = PARTIAL.get_partition_key_for_timestamp(start.timestamp())
    return sender_db, media, key


def _resources(dsn, media, tmp_path, destination: BackupDestination):
    return {
        "sender_db": SenderDatabase(dsn=dsn),
        "sender_settings": SenderSettings(
            media_dir=str(media),
            staging_dir=str(tmp_path / "staging"),
            sender_id="test-sender",
            pg_dump=_pg_dump(),
        ),
        "backup_destination": destination,
        "backup_publisher": BackupPublisher(destination=destination),
    }


def _pg_dump():
    from arb_pipeline.dev.postgres import find_bin_dir

    return str(find_bin_dir() / "pg_dump")


def _published(inbox: Path, kind: str) -> list[Path]:
    return sorted(p for p in (inbox / kind).iterdir() if (p / MANIFEST_NAME).exists())


def test_partial_backup_is_published_with_a_verified_manifest(traffic, tmp_path):
    dsn, media, key = traffic
    inbox = tmp_path / "inbox"
    result = dg.materialize(
        [partial_backup],
        partition_key=key,
        resources=_resources(dsn, media, tmp_path, BackupDestination(kind="local", local_dir=str(inbox))),
    )
    assert result.success
    [backup] = _published(inbox, "partial")
    manifest = Manifest.from_json((backup / MANIFEST_NAME).read_bytes())
    assert (
        manifest.kind == "partial" and manifest.partition_key == key and manifest.sender_id == "test-sender"
    )
    window = PARTIAL.time_window_for_partition_key(key)
    assert manifest.window_start == window.start and manifest.extract_from == window.start - timedelta(
        minutes=15
    )
    # Every file is there, with the size and hash the manifest says; rows match.
    import hashlib

    for f in manifest.files:
        data = (backup / f.name).read_bytes()
        assert len(data) == f.bytes and hashlib.sha256(data).hexdigest() == f.sha256
    reports = manifest.table_files()
    rows = {f.table: sum(1 for _ in iter_table_lines(backup / f.name)) for f in reports}
    assert rows == {f.table: f.rows for f in reports}
    assert sum(rows.values()) > 0
    # Media referenced by the window's reports travelled, any extension case.
    with connect(dsn) as conn:
        names = {
            r[0]
            for r in conn.execute(
                'SELECT "imageName" FROM "AndroidRequests_report" WHERE "imageName" IS NOT NULL '
                'AND "timeStamp" >= %s AND "timeStamp" < %s',
                (manifest.extract_from, manifest.window_end),
            )
        }
    assert {m.name for m in manifest.media} == names
    # The staging folder is gone after the run; table assets carry row counts.
    assert not any((tmp_path / "staging").iterdir())
    mats = result.asset_materializations_for_node("partial_backup")
    by_key = {m.asset_key.path[-1]: m for m in mats}
    assert by_key["report"].metadata["rows"].value == rows["AndroidRequests_report"]
    assert by_key["backup"].metadata["backup_id"].value == manifest.backup_id


def test_backfill_of_a_past_window_gives_the_same_content(traffic, tmp_path):
    dsn, media, key = traffic
    inbox = tmp_path / "inbox"
    res = _resources(dsn, media, tmp_path, BackupDestination(kind="local", local_dir=str(inbox)))
    for _ in range(2):
        assert dg.materialize([partial_backup], partition_key=key, resources=res).success
    first, second = (
        Manifest.from_json((p / MANIFEST_NAME).read_bytes()) for p in _published(inbox, "partial")
    )
    assert first.backup_id != second.backup_id
    assert [(f.name, f.sha256) for f in first.files] == [(f.name, f.sha256) for f in second.files]


@pytest.mark.parametrize("segmented", [False, True], ids=["whole", "segmented"])
def test_complete_backup_restores_with_psql(traffic, tmp_path, pg_cluster, monkeypatch, segmented):
    """Also with every table cut into frames by key range (extract/segments.py), as the
    large ones are: zstd reads the frames one after the other."""
    import subprocess

    from arb_pipeline.extract import segments

    dsn, media, _ = traffic
    if segmented:
        monkeypatch.setattr(segments, "SEGMENTED_TABLE_BYTES", 0)
        monkeypatch.setattr(segments, "MIN_SEGMENT_BITS", 2)
        with connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")  # the statistics say which tables' rows lie in key order
    inbox = tmp_path / "inbox"
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    result = dg.materialize(
        [complete_backup],
        partition_key=day,
        resources=_resources(dsn, media, tmp_path, BackupDestination(kind="local", local_dir=str(inbox))),
    )
    assert result.success
    [backup] = _published(inbox, "complete")
    manifest = Manifest.from_json((backup / MANIFEST_NAME).read_bytes())
    assert len(manifest.table_files()) == 23 and manifest.file("schema") and manifest.file("restore")
    cut = sum(len(f.segments) > 1 for f in manifest.table_files())
    assert cut > 5 if segmented else cut == 0
    assert {m.name for m in manifest.media} == {p.name for p in media.iterdir()}
    # Disaster recovery: the command in docs/backup-format.md restores it into an empty database.
    target = pg_cluster.create_database("restored_" + backup.name[-8:])
    done = subprocess.run(
        [
            pg_cluster.tool("psql"),
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-q",
            "-d",
            target,
            "-f",
            "restore.sql",
        ],
        cwd=backup,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    from arb_pipeline.ops.parity import compare_tables

    with connect(target) as conn:  # the personal columns exist but were never shipped
        assert (
            conn.execute(
                'SELECT count(*) FROM "AndroidRequests_transappuser" '
                'WHERE email IS NOT NULL OR "sessionToken" IS NOT NULL'
            ).fetchone()[0]
            == 0
        )
        conn.execute(
            'ALTER TABLE "AndroidRequests_transappuser" DROP COLUMN email, DROP COLUMN "sessionToken"'
        )
    report = compare_tables(dsn, target)
    assert report.ok, report.format()


@pytest.mark.sshd
def test_partial_backup_over_sftp(traffic, tmp_path, sftp_inbox):
    dsn, media, key = traffic
    sshd = sftp_inbox
    destination = sftp_destination(sshd)
    assert dg.materialize(
        [partial_backup], partition_key=key, resources=_resources(dsn, media, tmp_path, destination)
    ).success
    [backup] = _published(Path(sshd.inbox_dir), "partial")
    manifest = Manifest.from_json((backup / MANIFEST_NAME).read_bytes())
    assert {str(p.relative_to(backup)) for p in backup.rglob("*") if p.is_file()} == {
        f.name for f in manifest.files
    } | {MANIFEST_NAME}


@pytest.mark.sshd
def test_a_changed_host_key_fails_the_run_with_a_clear_error(traffic, tmp_path, sftp_inbox):
    dsn, media, key = traffic
    sshd = sftp_inbox
    sshd.regenerate_host_key(update_known_hosts=False)
    destination = sftp_destination(sshd, retries=1)
    result = dg.materialize(
        [partial_backup],
        partition_key=key,
        raise_on_error=False,
        resources=_resources(dsn, media, tmp_path, destination),
    )
    assert not result.success
    message = str(result.get_run_failure_event().message) + json.dumps(
        [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    )
    assert "changed" in message.lower() and "known_hosts" in message.lower()
    assert not (Path(sshd.inbox_dir) / "partial").exists() or not _published(Path(sshd.inbox_dir), "partial")
