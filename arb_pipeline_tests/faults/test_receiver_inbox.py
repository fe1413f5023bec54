"""Faults on the receiver's inbox, through its Dagster layer (inbox sensor + load assets), in
process: quick, no sshd, not part of the fault matrix (no ``faults`` marker).

Backups are built from a real sender database and published into the receiver's inbox
through the local-folder transport (the SFTP transport's twin: temporary names, manifest
last); test_receiver_e2e.py covers the real sshd, and the matrix (test_receiver_side.py)
the same faults end to end over SFTP with the sender's own runs. These tests pin what the
matrix doesn't: the error message and REASON.txt name the bad file, hash, size or table;
ledger outcomes ("already loaded", "superseded"); the sensor's cursor, run keys and bounds.
Every test asserts on data: rows in the receiver database, ledger rows, folders in the
inbox and the quarantine.

The module's sender timeline (all windows closed, the sender quiet afterwards):

    W1 traffic -> P1 | W2 votes/reports (updating W1's events) -> P2 | snapshot "at_p2"
    complete C | W3 votes/reports -> P3 (newer than C) | five empty partials two days old
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.scale import build_event_window
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete
from arb_pipeline.extract.tables import Window
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline.receive.quarantine import REASON_NAME
from arb_pipeline_tests.support.backups import load as load_direct
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.postgres import copy_db, fresh_db
from arb_pipeline_tests.support.receiver import Receiver, failure_text, load_run, tick
from arb_pipeline_tests.support.traffic import BASELINE_OPS, PARTIAL_OPS, traffic_at

UTC = timezone.utc
P = "AndroidRequests_"
PARTIAL_TABLES = list(current_catalog().partial_tables)
ALL_TABLES = list(current_catalog().table_names)
EVENT_TABLES = [
    P + t
    for t in (
        "eventforbusstop",
        "eventforbusv2",
        "stadisticdatafromregistrationbusstop",
        "stadisticdatafromregistrationbus",
    )
]


# -- the sender, built once -----------------------------------------------------------------


@dataclass
class SenderWorld:
    dsn: str
    at_p2: str  # a copy of the sender taken right after P2
    media: Path
    p1: BuiltBackup
    p2: BuiltBackup
    complete: BuiltBackup
    p3: BuiltBackup
    old: list[BuiltBackup]  # empty partials of windows two days old


@pytest.fixture(scope="module")
def world(pg_cluster, tmp_path_factory) -> SenderWorld:
    root = tmp_path_factory.mktemp("faults-sender")
    dsn, media, staging = new_sender(pg_cluster, root, seed=17)
    now = datetime.now(UTC)
    k1 = PARTIAL.get_partition_key_for_timestamp((now - timedelta(minutes=45)).timestamp())
    w1 = window_of(k1)
    k2 = PARTIAL.get_partition_key_for_timestamp((w1.end + timedelta(seconds=1)).timestamp())
    k3 = PARTIAL.get_partition_key_for_timestamp((window_of(k2).end + timedelta(seconds=1)).timestamp())
    traffic_at(dsn, media, 17, w1.start + timedelta(seconds=60), BASELINE_OPS, 150)
    p1 = partial_for(dsn, staging, media, k1, "p1")
    traffic_at(dsn, media, 18, window_of(k2).start + timedelta(seconds=60), PARTIAL_OPS, 80)
    p2 = partial_for(dsn, staging, media, k2, "p2")
    at_p2 = copy_db(pg_cluster, dsn, "sender_copy")
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    tw = COMPLETE.time_window_for_partition_key(day)
    complete = build_complete(
        dsn,
        staging,
        partition_key=day,
        window=Window(tw.start, tw.end),
        unique="c",
        media_dir=media,
        sender_id="faults",
        pg_dump=str(find_bin_dir() / "pg_dump"),
    )
    traffic_at(dsn, media, 19, window_of(k3).start + timedelta(seconds=60), PARTIAL_OPS, 80)
    p3 = partial_for(dsn, staging, media, k3, "p3")
    old_start = PARTIAL.get_partition_key_for_timestamp((now - timedelta(days=2)).timestamp())
    old, key = [], old_start
    for i in range(5):
        old.append(partial_for(dsn, staging, media, key, f"old{i}"))
        key = PARTIAL.get_partition_key_for_timestamp((window_of(key).end + timedelta(seconds=1)).timestamp())
    # The scenarios need: media in P1, and events of W1 that W2's votes moved into W2.
    assert p1.manifest.media, "P1 should carry report images"
    with connect(dsn) as conn:
        moved = conn.execute(
            f'SELECT count(*) FROM "{P}eventforbusv2" WHERE "timeCreation" >= %s AND '
            f'"timeCreation" < %s AND "timeStamp" >= %s',
            (w1.start, w1.end, w1.end),
        ).fetchone()[0]
    assert moved > 0, "W2's votes should have updated events created in W1"
    return SenderWorld(dsn, at_p2, media, p1, p2, complete, p3, old)


# -- the receiver side ----------------------------------------------------------------------


@pytest.fixture
def rx(receiver_db, tmp_path) -> Receiver:
    return Receiver.under(receiver_db, tmp_path)


@pytest.fixture
def instance():
    return dg.DagsterInstance.ephemeral()


def outcomes_of(result, node: str = "load_partial") -> list[dict]:
    """The ``backups`` metadata of the run's materializations: backup ids and load outcomes."""
    return result.asset_materializations_for_node(node)[0].metadata["backups"].value


def row_counts(dsn: str) -> dict[str, int]:
    with connect(dsn) as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in ALL_TABLES}


def ledger(dsn: str) -> dict[str, str]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc, indent=1))


def rehash(folder: Path, doc: dict, name: str) -> None:
    """Make the manifest's entry for ``name`` match the file (size and sha256)."""
    data = (folder / name).read_bytes()
    entry = next(f for f in doc["files"] if f["name"] == name)
    entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def biggest_table_file(built: BuiltBackup) -> str:
    return max(built.manifest.table_files(), key=lambda f: f.bytes).name


def assert_quarantined_and_nothing_loaded(rx: Receiver, built: BuiltBackup, before: dict[str, int]):
    where = rx.quarantined(built)
    assert not rx.folder(built).exists(), "the bad backup must leave the inbox"
    assert (where / MANIFEST_NAME).is_file() and (where / REASON_NAME).is_file()
    assert row_counts(rx.dsn) == before
    assert built.manifest.backup_id not in ledger(rx.dsn)
    return (where / REASON_NAME).read_text()


# -- 1. duplicate delivery ------------------------------------------------------------------


def test_a_backup_delivered_twice_loads_once(world, rx, instance):
    res = rx.resources()
    rx.deliver(world.p1)
    _, outcomes = tick(instance, res)
    assert [o.success for _, o in outcomes] == [True]
    counts = row_counts(rx.dsn)
    assert sum(counts[t] for t in PARTIAL_TABLES) == sum(
        f.rows for f in world.p1.manifest.table_files() if f.table in PARTIAL_TABLES
    )
    # Published again over itself, and again after it was removed: the sensor asks nothing.
    rx.deliver(world.p1)
    again, outcomes = tick(instance, res)
    assert outcomes == [] and again.skip_reason
    shutil.rmtree(rx.folder(world.p1))
    rx.deliver(world.p1)
    again, outcomes = tick(instance, res)
    assert outcomes == []
    # A run for it anyway (from the UI): a no-op.
    second = load_run(instance, res, world.p1)
    assert second.success
    assert outcomes_of(second) == [{"backup_id": world.p1.manifest.backup_id, "outcome": "already loaded"}]
    assert row_counts(rx.dsn) == counts
    assert ledger(rx.dsn) == {world.p1.manifest.backup_id: "loaded"}


# -- 2. out of order partials -------------------------------------------------------------------


def test_partial_n_plus_1_before_n_ends_like_in_order(world, rx, instance, pg_cluster):
    res = rx.resources()
    rx.deliver(world.p1), rx.deliver(world.p2)
    newer = load_run(instance, res, world.p2)
    older = load_run(instance, res, world.p1)
    assert newer.success and older.success
    assert outcomes_of(older)[0]["outcome"] == "loaded"
    report = compare_tables(world.at_p2, rx.dsn, tables=PARTIAL_TABLES)
    assert report.ok, report.format()  # the newest versions of the voted events won
    in_order = fresh_db(pg_cluster, "receiver")
    load_direct(in_order, world.p1), load_direct(in_order, world.p2)
    report = compare_tables(in_order, rx.dsn)
    assert report.ok, report.format()


# -- 3. a complete after newer partials -----------------------------------------------------------


def test_a_complete_after_newer_partials_ends_in_full_parity(world, rx, instance):
    res = rx.resources()
    for built in (world.p1, world.p2, world.complete, world.p3):
        rx.deliver(built)
    for built in (world.p3, world.p1, world.complete, world.p2):  # P3 is newer than the complete
        assert load_run(instance, res, built).success
    assert ledger(rx.dsn) == {
        world.p3.manifest.backup_id: "loaded",
        world.p1.manifest.backup_id: "loaded",
        world.complete.manifest.backup_id: "loaded",
        world.p2.manifest.backup_id: "superseded",
    }
    report = compare_tables(world.dsn, rx.dsn)
    assert report.ok, report.format()
    media = compare_media(world.media, rx.media)
    assert media.ok, media.format()


# -- 4-6. backups that fail verification --------------------------------------------------------


def test_a_tampered_file_is_quarantined_naming_file_and_sha256(world, rx, instance):
    res = rx.resources()
    folder = rx.deliver(world.p1)
    name = biggest_table_file(world.p1)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    before = row_counts(rx.dsn)
    _, outcomes = tick(instance, res)
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    entry = next(f for f in world.p1.manifest.files if f.name == name)
    assert name in message and "sha256 differs" in message and entry.sha256 in message
    reason = assert_quarantined_and_nothing_loaded(rx, world.p1, before)
    assert name in reason and entry.sha256 in reason
    assert not list(rx.media.iterdir()), "no media of a bad backup is installed"
    again, outcomes = tick(instance, res)
    assert outcomes == [] and "no new backup" in again.skip_reason.skip_message


def test_a_truncated_file_is_quarantined_naming_the_bytes(world, rx, instance):
    res = rx.resources()
    folder = rx.deliver(world.p1)
    name = biggest_table_file(world.p1)
    size = (folder / name).stat().st_size
    with open(folder / name, "r+b") as fh:
        fh.truncate(size - 100)
    before = row_counts(rx.dsn)
    _, outcomes = tick(instance, res)
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert name in message and f"{size} bytes" in message and f"{size - 100} bytes" in message
    assert_quarantined_and_nothing_loaded(rx, world.p1, before)
    assert tick(instance, res)[1] == []


def test_an_unknown_table_is_quarantined_naming_it(world, rx, instance):
    res = rx.resources()
    folder = rx.deliver(world.p1)
    old_name = f"tables/{P}report.jsonl.zst"
    new_name = f"tables/{P}nosuchtable.jsonl.zst"
    assert (folder / old_name).is_file()
    (folder / old_name).rename(folder / new_name)

    def change(doc):
        entry = next(f for f in doc["files"] if f["name"] == old_name)
        entry["name"], entry["table"] = new_name, P + "nosuchtable"
        doc["tables_order"] = [P + "nosuchtable" if t == P + "report" else t for t in doc["tables_order"]]

    edit_manifest(folder, change)
    before = row_counts(rx.dsn)
    _, outcomes = tick(instance, res)
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert f"unknown table {P}nosuchtable" in message and "sha256" not in message
    reason = assert_quarantined_and_nothing_loaded(rx, world.p1, before)
    assert P + "nosuchtable" in reason


# -- 7. a sender column the receiver lacks ------------------------------------------------------


def test_an_extra_sender_column_is_ignored_and_named(rx, instance, pg_cluster, tmp_path):
    dsn = fresh_db(pg_cluster, "sender")
    media = tmp_path / "sender-media"
    media.mkdir()
    with connect(dsn) as conn:
        seed_reference(conn, seed=5, scale=0.02)
        conn.execute(
            f'ALTER TABLE "{P}eventforbusv2" ADD COLUMN "senderOnlyNote" text DEFAULT \'from sender\''
        )
        conn.commit()
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=30)).timestamp())
    traffic_at(dsn, media, 5, window_of(key).start + timedelta(seconds=60), PARTIAL_OPS, 60)
    built = partial_for(dsn, tmp_path / "staging", media, key, "extra")
    entry = next(f for f in built.manifest.table_files() if f.table == P + "eventforbusv2")
    assert entry.rows > 0 and "senderOnlyNote" in [c.name for c in entry.columns]
    rx.deliver(built)
    _, outcomes = tick(instance, rx.resources())
    ((request, result),) = outcomes
    assert result.success
    warnings = [
        e.user_message for e in instance.all_logs(result.run_id) if "senderOnlyNote" in e.user_message
    ]
    assert warnings and all(f"{P}eventforbusv2" in w for w in warnings), warnings
    report = compare_tables(dsn, rx.dsn, tables=PARTIAL_TABLES)
    assert report.ok, report.format()
    assert report.table(P + "eventforbusv2").sender_only_columns == ("senderOnlyNote",)


# -- 8. a receiver column the backup lacks ----------------------------------------------------------


def test_a_receiver_schema_behind_waits_in_the_inbox_then_loads(world, rx, instance):
    table = P + "eventforbusv2"
    with connect(rx.dsn) as conn:
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "receiverNeeds" int NOT NULL DEFAULT 0')
        conn.execute(f'ALTER TABLE "{table}" ALTER COLUMN "receiverNeeds" DROP DEFAULT')
        conn.commit()
    folder = rx.deliver(world.p1)
    before = row_counts(rx.dsn)
    _, outcomes = tick(instance, rx.resources(retry_after_seconds=3600))
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert table in message and "receiverNeeds" in message and "arb migrate" in message
    assert (folder / MANIFEST_NAME).is_file() and not rx.quarantine.exists()
    assert row_counts(rx.dsn) == before and ledger(rx.dsn) == {}
    # Not due yet: the sensor waits retry_after_seconds.
    waiting, outcomes = tick(instance, rx.resources(retry_after_seconds=3600))
    assert outcomes == [] and "none due" in waiting.skip_reason.skip_message
    with connect(rx.dsn) as conn:
        conn.execute(f'ALTER TABLE "{table}" DROP COLUMN "receiverNeeds"')
        conn.commit()
    _, outcomes = tick(instance, rx.resources(retry_after_seconds=0))
    assert [(r.run_key, o.success) for r, o in outcomes] == [
        (f"{world.p1.manifest.backup_id}#attempt-2", True)
    ]
    assert ledger(rx.dsn) == {world.p1.manifest.backup_id: "loaded"}
    assert row_counts(rx.dsn)[table] == next(
        f.rows for f in world.p1.manifest.table_files() if f.table == table
    )


# -- 9. media names that climb out ------------------------------------------------------------------


def _tar_with_escape(folder: Path, bundle: str, payload: bytes) -> None:
    """Rewrite the bundle with one more member, named ../escape.jpg."""
    src = folder / bundle
    out = folder / (bundle + ".new")
    with tarfile.open(src, "r:") as old, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as new:
        for member in old:
            new.addfile(member, old.extractfile(member))
        info = tarfile.TarInfo("../escape.jpg")
        info.size = len(payload)
        new.addfile(info, io.BytesIO(payload))
    out.replace(src)


@pytest.mark.parametrize("listed", [True, False], ids=["listed-in-manifest", "only-in-tar"])
def test_a_media_name_climbing_out_is_quarantined_and_writes_nothing_outside(world, rx, instance, listed):
    res = rx.resources()
    folder = rx.deliver(world.p1)
    bundle = world.p1.manifest.file("media").name
    payload = b"\xff\xd8\xff not really a jpeg"
    _tar_with_escape(folder, bundle, payload)

    def change(doc):
        rehash(folder, doc, bundle)  # the tar's own size and sha256 are right: only the name is bad
        if listed:
            doc["media"]["files"].append(
                {
                    "name": "../escape.jpg",
                    "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                }
            )

    edit_manifest(folder, change)
    before = row_counts(rx.dsn)
    _, outcomes = tick(instance, res)
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert "../escape.jpg" in message
    assert_quarantined_and_nothing_loaded(rx, world.p1, before)
    assert not (rx.media.parent / "escape.jpg").exists()
    assert list(rx.media.iterdir()) == [], "nothing of the bundle may be installed"
    assert tick(instance, res)[1] == []


# -- 10. the disk floor -----------------------------------------------------------------------------


def test_the_disk_floor_stops_loading_then_the_sensor_retries(world, rx, instance):
    folder = rx.deliver(world.p1)
    floor = rx.resources(min_free_mb=10**9, retry_after_seconds=0)
    first, outcomes = tick(instance, floor)
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert f"inbox ({folder})" in message and "ARB_MIN_FREE_MB" in message
    assert (folder / MANIFEST_NAME).is_file() and not rx.quarantine.exists()
    assert ledger(rx.dsn) == {} and sum(row_counts(rx.dsn).values()) == 0
    assert json.loads(first.cursor) == {world.p1.manifest.backup_id: 1}
    second, outcomes = tick(instance, rx.resources(min_free_mb=0, retry_after_seconds=0), first.cursor)
    assert [(r.run_key, o.success) for r, o in outcomes] == [
        (f"{world.p1.manifest.backup_id}#attempt-2", True)
    ]
    assert json.loads(second.cursor) == {world.p1.manifest.backup_id: 2}
    assert ledger(rx.dsn) == {world.p1.manifest.backup_id: "loaded"}
    third, outcomes = tick(instance, rx.resources(min_free_mb=0), second.cursor)
    assert outcomes == [] and json.loads(third.cursor) == {}


# -- 11. SIGKILL in the middle of a load ------------------------------------------------------------

_RECEIVE = (
    "import os, sys; from pathlib import Path; from arb_pipeline.receive.inbox import receive; "
    "receive(Path(sys.argv[1]), dsn=os.environ['ARB_TEST_DSN'], media_dir=Path(sys.argv[2]), "
    "quarantine_dir=Path(sys.argv[3]))"
)


def test_a_load_killed_mid_transaction_leaves_nothing_and_reruns_fully(rx, pg_cluster, tmp_path):
    dsn = fresh_db(pg_cluster, "sender")
    media = tmp_path / "sender-media"
    media.mkdir()
    start = datetime.now(UTC) - timedelta(hours=3)
    small_key = PARTIAL.get_partition_key_for_timestamp((start - timedelta(minutes=10)).timestamp())
    big_key = PARTIAL.get_partition_key_for_timestamp(start.timestamp())
    with connect(dsn) as conn:
        seed_reference(conn, seed=23, scale=0.02)
        build_event_window(conn, window_of(small_key).start, rows=400)
        build_event_window(conn, window_of(big_key).start, rows=100_000)
    small = partial_for(dsn, tmp_path / "staging", media, small_key, "small")
    big = partial_for(dsn, tmp_path / "staging", media, big_key, "big")
    assert load_direct(rx.dsn, small).outcome == "loaded"
    before, ledger_before = row_counts(rx.dsn), ledger(rx.dsn)
    folder = rx.deliver(big)
    dbname = psycopg.conninfo.conninfo_to_dict(rx.dsn)["dbname"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECEIVE, str(folder), str(rx.media), str(rx.quarantine)],
        env={**os.environ, "ARB_TEST_DSN": rx.dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    late_stage = re.compile(r"arb_stage_([6-9]|\d\d)")
    victim = None
    try:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True, application_name="arb_test_probe") as probe:
            deadline = time.monotonic() + 60
            while victim is None and proc.poll() is None and time.monotonic() < deadline:
                for pid, xid, query in probe.execute(
                    "SELECT pid, backend_xid, query FROM pg_stat_activity WHERE datname = %s "
                    "AND state = 'active' AND pid <> pg_backend_pid()",
                    (dbname,),
                ):
                    if (
                        late_stage.search(query or "") and xid is not None
                    ):  # tables already merged, uncommitted
                        victim = (pid, query)
                        proc.send_signal(signal.SIGKILL)
                        break
                else:
                    time.sleep(0.005)
            if victim is None:
                proc.kill()
                pytest.fail(
                    f"the load ended (rc {proc.wait()}) before it could be killed: {proc.stderr.read()!r}"
                )
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
            while probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (victim[0],)).fetchone():
                assert time.monotonic() < deadline, "the killed loader's backend never went away"
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert row_counts(rx.dsn) == before and ledger(rx.dsn) == ledger_before
    assert (folder / MANIFEST_NAME).is_file() and not rx.quarantine.exists()
    rerun = receive(folder, dsn=rx.dsn, media_dir=rx.media, quarantine_dir=rx.quarantine)
    assert rerun.load.outcome == "loaded" and rerun.load.rows_written == rerun.load.rows_in_backup
    assert ledger(rx.dsn)[big.manifest.backup_id] == "loaded"
    report = compare_tables(dsn, rx.dsn, tables=EVENT_TABLES)
    assert report.ok, report.format()


# -- 12. retention through the load asset ---------------------------------------------------------


def test_retention_after_a_later_load_removes_only_old_loaded_partials(world, rx, instance):
    loaded_old, unloaded_old = world.old[0], world.old[1]
    for built in (loaded_old, unloaded_old, world.p1):
        rx.deliver(built)
    # Loaded under a long retention: it stays.
    assert load_run(instance, rx.resources(partial_retention_days=30), loaded_old).success
    assert rx.folder(loaded_old).is_dir()
    # A later load with the 1-day rule removes it; the unloaded old one and the young one stay.
    assert load_run(instance, rx.resources(), world.p1).success
    assert not rx.folder(loaded_old).exists()
    assert rx.folder(unloaded_old).is_dir() and rx.folder(world.p1).is_dir()
    assert set(ledger(rx.dsn)) == {loaded_old.manifest.backup_id, world.p1.manifest.backup_id}
    # The unloaded one is still waiting, and the sensor loads it; then retention removes it too.
    _, outcomes = tick(instance, rx.resources())
    assert [(r.tags["arb/backup_id"], o.success) for r, o in outcomes] == [
        (unloaded_old.manifest.backup_id, True)
    ]
    assert not rx.folder(unloaded_old).exists() and rx.folder(world.p1).is_dir()


# -- 13. the sensor ---------------------------------------------------------------------------------


def test_the_sensor_is_bounded_skips_uploads_and_keeps_its_cursor(world, rx, instance):
    res = rx.resources(max_runs_per_tick=2, max_backups_per_run=1, partial_retention_days=30)
    ids = [b.manifest.backup_id for b in world.old]
    for built in reversed(world.old):  # delivery order is not load order: oldest snapshot first
        rx.deliver(built)
    # An upload in progress (temporary name) and a folder whose manifest hasn't arrived.
    shutil.copytree(
        rx.folder(world.old[0]), rx.inbox / "partial" / f".{world.p1.manifest.backup_id}.1a2b.part"
    )
    no_manifest = rx.inbox / "partial" / world.p1.manifest.backup_id
    shutil.copytree(rx.folder(world.old[0]), no_manifest)
    (no_manifest / MANIFEST_NAME).rename(no_manifest / f".{MANIFEST_NAME}.9f9f.part")
    # Evaluated twice before any run starts: the same run keys (the daemon dedupes by them).
    dry1, _ = tick(instance, res, execute=False)
    dry2, _ = tick(instance, res, dry1.cursor, execute=False)
    assert [r.run_key for r in dry1.run_requests] == [r.run_key for r in dry2.run_requests] == ids[:2]
    first, outcomes = tick(instance, res)
    assert [(r.run_key, o.success) for r, o in outcomes] == [(i, True) for i in ids[:2]]
    second, outcomes = tick(instance, res, first.cursor)
    assert [(r.run_key, o.success) for r, o in outcomes] == [(i, True) for i in ids[2:4]]
    assert json.loads(first.cursor) == {ids[0]: 1, ids[1]: 1}
    assert json.loads(second.cursor) == {ids[2]: 1, ids[3]: 1}  # loaded ones leave the cursor
    # A restart: a new instance, the stored cursor. The ledger says what is loaded.
    fresh = dg.DagsterInstance.ephemeral()
    third, outcomes = tick(fresh, res, second.cursor)
    assert [(r.run_key, o.success) for r, o in outcomes] == [(ids[4], True)]
    assert json.loads(third.cursor) == {ids[4]: 1}
    last, outcomes = tick(fresh, res, third.cursor)
    assert outcomes == [] and last.skip_reason.skip_message == "no new backup in the inbox"
    assert set(ledger(rx.dsn)) == set(ids)
    assert (no_manifest / f".{MANIFEST_NAME}.9f9f.part").is_file()  # never touched
    assert (rx.inbox / "partial" / f".{world.p1.manifest.backup_id}.1a2b.part").is_dir()


# -- a receiver misconfiguration is not the backup's fault ---------------------------------------


def test_a_missing_receiver_media_folder_fails_the_run_but_keeps_the_backup(world, rx, instance):
    folder = rx.deliver(world.p1)
    rx.media.rmdir()
    _, outcomes = tick(instance, rx.resources(retry_after_seconds=0))
    assert [o.success for _, o in outcomes] == [False]
    message = failure_text(outcomes[0][1])
    assert str(rx.media) in message and "media_dir" in message
    assert (folder / MANIFEST_NAME).is_file() and not rx.quarantine.exists()
    assert ledger(rx.dsn) == {}
    rx.media.mkdir()
    _, outcomes = tick(instance, rx.resources(retry_after_seconds=0))
    assert [o.success for _, o in outcomes] == [True]
    assert ledger(rx.dsn) == {world.p1.manifest.backup_id: "loaded"}
