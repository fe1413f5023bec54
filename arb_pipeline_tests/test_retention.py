"""Inbox retention and the disk guard.

Promise 4 (nothing deleted that wasn't loaded; the newest complete is always kept) and
promise 6 (a full disk is a clear error naming the volume and the setting)."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from arb_pipeline.errors import ArbError
from arb_pipeline.ops.disk_guard import (
    DATABASE_VOLUME,
    DiskFloor,
    DiskSpaceError,
    check_free_space,
    format_bytes,
    free_bytes,
)
from arb_pipeline.ops.retention import (
    ABANDONED_UPLOAD,
    HASH_MISMATCH,
    INCOMPLETE_UPLOAD,
    NEWEST_COMPLETE,
    NOT_A_BACKUP_FOLDER,
    NOT_LOADED,
    TOO_YOUNG,
    UPLOAD_IN_PROGRESS,
    Candidate,
    RetentionPlan,
    apply_retention,
    load_ledger,
    plan_retention,
)
from arb_pipeline.package.manifest import MANIFEST_NAME, FileEntry, Manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.transport.base import temporary_name
from arb_pipeline_tests.support.roles import make_receiver_role

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY = timedelta(days=1)


# -- fabricating an inbox ---------------------------------------------------------------


def make_manifest(
    kind: str,
    window_end: datetime,
    *,
    unique: str | None = None,
    sender_id: str = "transapp",
    snapshot_delay: timedelta = timedelta(minutes=1),
) -> Manifest:
    if kind == "partial":
        start = window_end - timedelta(minutes=5)
        key = start.strftime("%Y-%m-%d-%H-%M")
    else:
        start = window_end - DAY
        key = start.strftime("%Y-%m-%d")
    media = FileEntry(name="media.tar", kind="media", bytes=0, sha256=hashlib.sha256(b"").hexdigest(), rows=0)
    return Manifest(
        backup_id=f"{kind}-{key}-{unique or secrets.token_hex(6)}",
        kind=kind,
        partition_key=key,
        window_start=start,
        window_end=window_end,
        extract_from=start - timedelta(minutes=2) if kind == "partial" else None,
        snapshot_time=window_end + snapshot_delay,
        sender_id=sender_id,
        created_by="arb_pipeline tests",
        files=(media,),
        tables_order=(),
    )


def write_backup(inbox: Path, manifest: Manifest) -> Path:
    folder = inbox / manifest.kind / manifest.backup_id
    folder.mkdir(parents=True)
    (folder / "media.tar").write_bytes(b"")
    (folder / MANIFEST_NAME).write_bytes(manifest.to_json())
    return folder


def sha(folder: Path) -> str:
    return hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()


def record_loaded(dsn: str, manifest: Manifest, manifest_sha256: str, outcome: str = "loaded") -> None:
    """A ledger row as the loader writes it."""
    with connect(dsn) as conn:
        conn.execute(
            "INSERT INTO arb_loaded_backup (backup_id, kind, partition_key, sender_id, manifest_sha256, "
            "snapshot_time, window_start, window_end, outcome, rows_in_backup, rows_written) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 10, 10)",
            (
                manifest.backup_id,
                manifest.kind,
                manifest.partition_key,
                manifest.sender_id,
                manifest_sha256,
                manifest.snapshot_time,
                manifest.window_start,
                manifest.window_end,
                outcome,
            ),
        )


def backup(inbox: Path, dsn: str | None, kind: str, age: timedelta, outcome: str | None = "loaded") -> Path:
    """A published backup whose window ended ``age`` ago; recorded in the ledger unless outcome is None."""
    manifest = make_manifest(kind, NOW - age)
    folder = write_backup(inbox, manifest)
    if outcome is not None:
        record_loaded(dsn, manifest, sha(folder), outcome)
    return folder


def ledger(dsn: str):
    with connect(dsn) as conn:
        return load_ledger(conn)


def set_age(folder: Path, age: timedelta) -> None:
    """Backdate every mtime in a folder tree (children first: creating entries touches the parent)."""
    stamp = time.time() - age.total_seconds()
    for p in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(p, (stamp, stamp), follow_symlinks=False)
    os.utime(folder, (stamp, stamp))


def reason_for(plan: RetentionPlan, folder: Path) -> str | None:
    return plan.kept_reason(folder.name)


def deleted_names(plan: RetentionPlan) -> set[str]:
    return {c.name for c in plan.delete}


@pytest.fixture
def inbox(tmp_path) -> Path:
    root = tmp_path / "inbox"
    (root / "partial").mkdir(parents=True)
    (root / "complete").mkdir()
    return root


# -- the ledger ---------------------------------------------------------------------------


def test_load_ledger_reads_every_row(inbox, receiver_db):
    a = backup(inbox, receiver_db, "partial", DAY * 2)
    b = backup(inbox, receiver_db, "complete", DAY * 5, outcome="superseded")
    entries = ledger(receiver_db)
    assert set(entries) == {a.name, b.name}
    assert entries[a.name].manifest_sha256 == sha(a)
    assert entries[a.name].outcome == "loaded" and entries[b.name].outcome == "superseded"
    assert entries[b.name].kind == "complete"
    assert entries[a.name].window_end == NOW - DAY * 2
    assert entries[a.name].loaded_at is not None


# -- partials ------------------------------------------------------------------------------


def test_old_loaded_partial_is_deleted(inbox, receiver_db, caplog):
    old = backup(inbox, receiver_db, "partial", timedelta(hours=30))
    superseded = backup(inbox, receiver_db, "partial", timedelta(hours=30), outcome="superseded")
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert deleted_names(plan) == {old.name, superseded.name}
    with caplog.at_level(logging.INFO, logger="arb_pipeline.ops.retention"):
        assert sorted(apply_retention(plan, inbox)) == sorted([old, superseded])
    assert not old.exists() and not superseded.exists()
    assert os.listdir(inbox / "partial") == []  # no hidden leftovers either
    assert old.name in caplog.text


def test_young_loaded_partial_is_kept(inbox, receiver_db):
    young = backup(inbox, receiver_db, "partial", timedelta(hours=20))
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert plan.delete == []
    assert reason_for(plan, young).startswith(TOO_YOUNG)
    assert apply_retention(plan, inbox) == [] and young.exists()


def test_old_unloaded_partial_is_kept_whatever_its_age(inbox, receiver_db):
    unloaded = backup(inbox, receiver_db, "partial", DAY * 400, outcome=None)
    loaded = backup(inbox, receiver_db, "partial", DAY * 2)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert deleted_names(plan) == {loaded.name}
    assert reason_for(plan, unloaded) == NOT_LOADED
    apply_retention(plan, inbox)
    assert unloaded.exists() and not loaded.exists()


def test_quarantine_is_never_seen(inbox, tmp_path, receiver_db):
    """Quarantined backups live outside <inbox>/<kind>/: retention neither lists nor deletes them,
    even when their id is in the ledger and they are old (a sibling folder, or one in the inbox root)."""
    places = [tmp_path / "quarantine", inbox / "quarantine"]
    quarantined = []
    for place in places:
        m = make_manifest("partial", NOW - DAY * 10)
        folder = write_backup(place, m)
        (folder / "REASON.txt").write_text("sha256 mismatch on media.tar")
        record_loaded(receiver_db, m, sha(folder))
        quarantined.append(folder)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert plan.delete == [] and plan.keep == []
    apply_retention(plan, inbox)
    assert all(f.exists() for f in quarantined)


def test_manifest_other_than_the_loaded_one_is_kept(inbox, receiver_db):
    """Same backup id, different manifest bytes: that version was never loaded."""
    m = make_manifest("partial", NOW - DAY * 3)
    folder = write_backup(inbox, m)
    record_loaded(receiver_db, m, "0" * 64)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert plan.delete == []
    assert reason_for(plan, folder).startswith(HASH_MISMATCH)
    assert folder.exists()


def test_manifest_replaced_after_planning_is_not_deleted(inbox, receiver_db, caplog):
    folder = backup(inbox, receiver_db, "partial", DAY * 3)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert deleted_names(plan) == {folder.name}
    # The sender re-sends the backup between planning and deleting: a different manifest.
    other = make_manifest("partial", NOW - DAY * 3, unique=folder.name.rsplit("-", 1)[1], sender_id="other")
    (folder / MANIFEST_NAME).write_bytes(other.to_json())
    with caplog.at_level(logging.WARNING, logger="arb_pipeline.ops.retention"):
        assert apply_retention(plan, inbox) == []
    assert folder.is_dir() and (folder / MANIFEST_NAME).read_bytes() == other.to_json()
    assert sorted(os.listdir(inbox / "partial")) == [folder.name]  # the rename was undone
    assert "different manifest" in caplog.text


def test_manifest_naming_another_folder_is_kept(inbox, receiver_db):
    m = make_manifest("partial", NOW - DAY * 3)
    folder = write_backup(inbox, m)
    record_loaded(receiver_db, m, sha(folder))
    moved = folder.rename(folder.with_name(make_manifest("partial", NOW - DAY * 3).backup_id))
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert plan.delete == [] and "not this folder" in reason_for(plan, moved)


def test_unreadable_manifest_is_kept(inbox, receiver_db):
    folder = inbox / "partial" / "partial-2020-01-01-00-00-abc"
    folder.mkdir()
    (folder / MANIFEST_NAME).write_text("{not json")
    set_age(folder, DAY * 30)
    plan = plan_retention(inbox, {}, NOW)
    assert plan.delete == [] and reason_for(plan, folder).startswith("unreadable manifest")


# -- completes ---------------------------------------------------------------------------


def test_newest_loaded_complete_is_always_kept(inbox, receiver_db):
    older = backup(inbox, receiver_db, "complete", DAY * 9)
    newest = backup(inbox, receiver_db, "complete", DAY * 6)  # older than the 4-day limit too
    unloaded = backup(inbox, receiver_db, "complete", DAY * 1, outcome=None)  # newer, but not loaded
    plan = plan_retention(inbox, ledger(receiver_db), NOW, complete_days=4)
    assert deleted_names(plan) == {older.name}
    assert reason_for(plan, newest).startswith(NEWEST_COMPLETE)
    assert reason_for(plan, unloaded) == NOT_LOADED
    apply_retention(plan, inbox)
    assert not older.exists() and newest.exists() and unloaded.exists()


def test_newest_complete_by_snapshot_time_even_when_superseded_ones_are_older(inbox, receiver_db):
    superseded = backup(inbox, receiver_db, "complete", DAY * 8, outcome="superseded")
    loaded = backup(inbox, receiver_db, "complete", DAY * 7)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert deleted_names(plan) == {superseded.name}
    assert reason_for(plan, loaded).startswith(NEWEST_COMPLETE)


def test_complete_younger_than_complete_days_is_kept(inbox, receiver_db):
    """Three days old: a partial of that age goes, a complete (4 days) stays."""
    three_days_complete = backup(inbox, receiver_db, "complete", DAY * 3)
    newest = backup(inbox, receiver_db, "complete", DAY * 2)
    three_days_partial = backup(inbox, receiver_db, "partial", DAY * 3)
    plan = plan_retention(inbox, ledger(receiver_db), NOW, complete_days=4)
    assert deleted_names(plan) == {three_days_partial.name}
    assert reason_for(plan, three_days_complete).startswith(TOO_YOUNG)
    assert reason_for(plan, newest).startswith(NEWEST_COMPLETE)
    # BKPS_LIFETIME is a setting: with 2 days, the three-day complete goes.
    plan = plan_retention(inbox, ledger(receiver_db), NOW, complete_days=2)
    assert deleted_names(plan) == {three_days_partial.name, three_days_complete.name}


def test_naive_now_is_refused(inbox):
    with pytest.raises(ArbError, match="timezone-aware"):
        plan_retention(inbox, {}, datetime.now())


# -- uploads without manifest ---------------------------------------------------------------


def upload_folder(inbox: Path, name: str, files: list[str]) -> Path:
    folder = inbox / "partial" / name
    for f in files:
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_bytes(b"x" * 10)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_abandoned_upload_of_temporary_files_only(inbox, caplog):
    temp_files = [
        temporary_name("tables/AndroidRequests_event.jsonl.zst"),
        temporary_name("media.tar"),
        temporary_name(MANIFEST_NAME),
    ]
    stale = upload_folder(inbox, "partial-2026-01-01-00-00-aaa", temp_files)
    set_age(stale, DAY * 3)
    fresh = upload_folder(inbox, "partial-2026-01-01-00-05-bbb", temp_files)
    set_age(fresh, DAY * 1)
    with_final_names = upload_folder(
        inbox,
        "partial-2026-01-01-00-10-ccc",
        ["tables/AndroidRequests_event.jsonl.zst", temporary_name("media.tar")],
    )
    set_age(with_final_names, DAY * 30)
    empty = upload_folder(inbox, "partial-2026-01-01-00-15-ddd", [])
    set_age(empty, DAY * 3)

    plan = plan_retention(inbox, {}, NOW, stale_days=2)
    assert deleted_names(plan) == {stale.name, empty.name}
    assert reason_for(plan, fresh).startswith(UPLOAD_IN_PROGRESS)
    assert reason_for(plan, with_final_names).startswith(INCOMPLETE_UPLOAD)
    with caplog.at_level(logging.INFO, logger="arb_pipeline.ops.retention"):
        assert sorted(apply_retention(plan, inbox)) == sorted([stale, empty])
    assert ABANDONED_UPLOAD in caplog.text
    assert not stale.exists() and fresh.exists() and with_final_names.exists()


def test_abandoned_upload_that_resumes_after_planning_is_kept(inbox):
    folder = upload_folder(inbox, "partial-2026-01-01-00-00-aaa", [temporary_name("media.tar")])
    set_age(folder, DAY * 3)
    plan = plan_retention(inbox, {}, NOW)
    assert deleted_names(plan) == {folder.name}
    (folder / temporary_name("restore.sql")).write_bytes(b"new")
    assert apply_retention(plan, inbox) == [] and folder.exists()
    # ... and one whose manifest arrives is kept too (even if its mtimes look old).
    set_age(folder, DAY * 3)
    plan = plan_retention(inbox, {}, NOW)
    (folder / MANIFEST_NAME).write_bytes(make_manifest("partial", NOW - DAY * 3).to_json())
    set_age(folder, DAY * 3)
    assert apply_retention(plan, inbox) == [] and (folder / MANIFEST_NAME).exists()


def test_stray_entries_in_a_kind_folder_are_left_alone(inbox, tmp_path):
    (inbox / "partial" / "notes.txt").write_text("hello")
    (inbox / "partial" / temporary_name("partial-x")).mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (inbox / "complete" / "complete-2020-01-01-abc").symlink_to(outside, target_is_directory=True)
    plan = plan_retention(inbox, {}, NOW)
    assert plan.delete == [] and len(plan.keep) == 3
    assert all(reason.startswith(NOT_A_BACKUP_FOLDER) for _, reason in plan.keep)


# -- apply_retention's own checks --------------------------------------------------------------


def test_apply_refuses_a_symlinked_backup_folder(inbox, tmp_path, receiver_db, caplog):
    folder = backup(inbox, receiver_db, "partial", DAY * 3)
    plan = plan_retention(inbox, ledger(receiver_db), NOW)
    assert deleted_names(plan) == {folder.name}
    # Between planning and deleting, the folder is swapped for a link to data outside the inbox,
    # holding the very manifest that was loaded.
    outside = tmp_path / "precious"
    shutil.move(folder, outside)
    folder.symlink_to(outside, target_is_directory=True)
    with caplog.at_level(logging.ERROR, logger="arb_pipeline.ops.retention"):
        assert apply_retention(plan, inbox) == []
    assert "symlink" in caplog.text
    assert (outside / MANIFEST_NAME).exists() and folder.is_symlink()


def test_apply_refuses_paths_outside_the_inbox(inbox, tmp_path, receiver_db):
    m = make_manifest("partial", NOW - DAY * 3)
    elsewhere = write_backup(tmp_path / "other", m)
    record_loaded(receiver_db, m, sha(elsewhere))
    forged = RetentionPlan(delete=[Candidate("partial", m.backup_id, elsewhere, m, sha(elsewhere))])
    assert apply_retention(forged, inbox) == [] and elsewhere.exists()
    # A kind that isn't one, or a name that climbs out, is refused too.
    forged = RetentionPlan(
        delete=[
            Candidate("..", m.backup_id, elsewhere, m, sha(elsewhere)),
            Candidate("partial", "..", inbox / "partial" / "..", m, sha(elsewhere)),
        ]
    )
    assert apply_retention(forged, inbox) == [] and elsewhere.exists() and (inbox / "partial").exists()


# -- the disk guard --------------------------------------------------------------------------


def test_disk_guard_raises_naming_the_volume_and_the_setting(tmp_path):
    huge = 1 << 62
    with pytest.raises(DiskSpaceError) as err:
        check_free_space({"media folder": tmp_path, "inbox": tmp_path / "not-yet-created"}, huge)
    msg = str(err.value)
    assert isinstance(err.value, ArbError)
    assert "media folder" in msg and "inbox" in msg and str(tmp_path) in msg
    assert "ARB_MIN_FREE_MB" in msg
    assert format_bytes(huge) in msg and "free" in msg
    assert "nothing was lost" in msg and "backups wait in the inbox" in msg


def test_disk_guard_passes_with_a_zero_floor(tmp_path):
    check_free_space({"media folder": tmp_path}, 0)
    check_free_space({"media folder": tmp_path}, 1)
    assert free_bytes(tmp_path) > 0


def test_the_database_folder_is_watched_where_the_role_may_see_it(pg_cluster, receiver_db, tmp_path):
    floor = DiskFloor({"inbox": tmp_path}, 1)
    with connect(receiver_db) as conn:  # the cluster's superuser, over a local connection
        data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
        assert floor.with_database(conn).volumes == {"inbox": tmp_path, DATABASE_VOLUME: data_dir}
        assert DiskFloor({"inbox": tmp_path}, 0).with_database(conn).volumes == {"inbox": tmp_path}
    role, role_dsn = make_receiver_role(pg_cluster, receiver_db)
    with connect(role_dsn) as conn:  # the receiver's own role may not read data_directory
        assert floor.with_database(conn).volumes == {"inbox": tmp_path}
    with connect(receiver_db) as conn:
        conn.execute(f"GRANT pg_read_all_settings TO {role}")
    with connect(role_dsn) as conn:  # as docs/operations.md suggests
        assert floor.with_database(conn).volumes[DATABASE_VOLUME] == data_dir


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
