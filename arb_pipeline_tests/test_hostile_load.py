"""A hostile or broken sender against a loaded receiver (issue 16): the guard on mass deletion,
media all or nothing, and quarantine versus retry decided by what the database refused.

Each case publishes a crafted backup (sizes and sha256 made to match, as a sender with the key
could) and asserts the receiver's tables, ledger, media folder and quarantine afterwards."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import zstandard

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.alert_sensors import describe_failure
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.load.hold import DeletionHeld, DeletionLimits
from arb_pipeline.package.manifest import MANIFEST_NAME, MediaEntry
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline.receive.media import install_media
from arb_pipeline_tests.support.backups import complete_for_yesterday, new_sender, partial_for, window_of
from arb_pipeline_tests.support.receiver import Receiver, evaluate
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

UTC = timezone.utc
TABLES = current_catalog().table_names
REPORT = "AndroidRequests_report"
VOTES = "AndroidRequests_stadisticdatafromregistrationbus"


@pytest.fixture(scope="module")
def sender(pg_cluster, tmp_path_factory):
    """A sender with traffic and media in one closed partial window: (dsn, media, staging, key)."""
    root = tmp_path_factory.mktemp("hostile-sender")
    dsn, media, staging = new_sender(pg_cluster, root, seed=16)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    traffic_at(dsn, media, 16, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 150)
    return dsn, media, staging, key


def counts(dsn) -> dict[str, int]:
    with connect(dsn) as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}


def ledger(dsn) -> dict[str, str]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hostile_copy(built, inbox: Path, tag: str, *, rows=None, manifest=None) -> Path:
    """A copy of ``built`` in ``inbox`` under a new id, table rows (raw lines) and manifest
    changed, sizes, hashes and row counts made to match."""
    new_id = f"{built.manifest.backup_id.rsplit('-', 1)[0]}-{tag}"
    folder = inbox / built.manifest.kind / new_id
    shutil.copytree(built.staged.root, folder)
    doc = json.loads((folder / MANIFEST_NAME).read_bytes())
    doc["backup_id"] = new_id
    for entry in doc["files"]:
        if rows and entry["kind"] == "table" and (entry["table"] in rows or "*" in rows):
            path = folder / entry["name"]
            lines = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().splitlines()
            lines = (rows.get(entry["table"]) or rows["*"])(lines)
            path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(line + b"\n" for line in lines)))
            entry["rows"] = len(lines)
    if manifest:
        manifest(doc)
    for entry in doc["files"]:
        data = (folder / entry["name"]).read_bytes()
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    return folder


def later_snapshot(doc, seconds=0.001):
    """A snapshot just after the original's (not superseded by it, not in the future); a
    millisecond, so that any complete the sender takes later is newer still."""
    snap = datetime.fromisoformat(doc["snapshot_time"].replace("Z", "+00:00")) + timedelta(seconds=seconds)
    doc["snapshot_time"] = snap.isoformat()
    for entry in doc["files"]:
        entry.pop("fingerprint", None)  # the digest of rows this copy no longer has


def arb(*args, dsn):
    env = {**os.environ, "ARB_RECEIVER_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "arb_pipeline.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def held_rows(dsn) -> dict[str, bool]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, approved_at IS NOT NULL FROM arb_held_backup").fetchall())


def _loaded_with_a_complete(sender, receiver_db, tmp_path, **settings):
    """A receiver whose inbox sensor has loaded a genuine complete, through Dagster's ticks:
    (receiver, that complete, the instance, the sensor's resources)."""
    dsn, media, staging, _ = sender
    rx = Receiver.under(receiver_db, tmp_path)
    genuine = complete_for_yesterday(dsn, staging, media)
    rx.deliver(genuine)
    instance = dg.DagsterInstance.ephemeral()
    resources = rx.resources(**settings)
    _, [(_, first)] = evaluate(instance, resources)
    assert first.success
    return rx, genuine, instance, resources


def test_an_empty_complete_waits_with_its_counts_until_arb_approve(sender, receiver_db, tmp_path):
    dsn, media, staging, _ = sender
    rx, genuine, instance, resources = _loaded_with_a_complete(sender, receiver_db, tmp_path)
    before, media_before = counts(receiver_db), tree(rx.media)
    assert before[REPORT] > 0

    folder = hostile_copy(genuine, rx.inbox, "empty", rows={"*": lambda lines: []}, manifest=later_snapshot)
    empty_id = folder.name
    _, [(_, run)] = evaluate(instance, resources)
    assert not run.success
    alert = describe_failure(instance, run.dagster_run)  # the failed-run email's text
    assert f"complete backup {empty_id} is held" in alert
    assert f"{REPORT}: {before[REPORT]} of {before[REPORT]} rows (empties it)" in alert
    assert f"arb approve {empty_id}" in alert
    assert counts(receiver_db) == before and tree(rx.media) == media_before  # nothing deleted
    assert empty_id not in ledger(receiver_db)
    assert folder.is_dir() and not (rx.quarantine / "complete" / empty_id).exists()  # waits
    assert held_rows(receiver_db) == {empty_id: False}

    # Held, it is not retried; a partial taken after it loads meanwhile.
    later = partial_for(dsn, staging, media, sender[3], "afterheld")
    rx.deliver(later)
    data, runs = evaluate(instance, resources)
    assert [r.run_config["ops"]["load_partial"]["config"]["backup_ids"] for r, _ in runs] == [
        [later.manifest.backup_id]
    ]
    assert ledger(receiver_db)[later.manifest.backup_id] == "loaded"
    data, runs = evaluate(instance, resources)
    assert runs == [] and f"{empty_id} held" in data.skip_message

    refused = arb("approve", "complete-2000-01-01-nosuch", dsn=receiver_db)
    assert refused.returncode == 2 and "is not held" in refused.stderr
    approved = arb("approve", empty_id, dsn=receiver_db)
    assert approved.returncode == 0, approved.stderr
    assert held_rows(receiver_db) == {empty_id: True}

    _, [(_, applied)] = evaluate(instance, resources)
    assert ledger(receiver_db)[empty_id] == "loaded", describe_failure(instance, applied.dagster_run)
    snap = later.manifest.snapshot_time
    with connect(receiver_db) as conn:  # it deleted every row a backup wrote, but the later partial's
        for table in TABLES:
            assert conn.execute(
                f'SELECT count(*) FROM "{table}" WHERE arb_synced_at IS NOT NULL AND arb_synced_at <> %s',
                (snap,),
            ).fetchone() == (0,), table
        kept = conn.execute(f'SELECT count(*) FROM "{REPORT}" WHERE arb_synced_at = %s', (snap,)).fetchone()
    assert kept == (next(f.rows for f in later.manifest.table_files() if f.table == REPORT),)


def test_a_held_complete_a_newer_complete_overtook_is_quarantined(sender, receiver_db, tmp_path):
    """Once a newer complete has loaded, the held one is older than the receiver's newest:
    loading it would roll the receiver back, so it is quarantined (receive/plausible.py)."""
    dsn, media, staging, _ = sender
    rx, genuine, instance, resources = _loaded_with_a_complete(
        sender, receiver_db, tmp_path, retry_after_seconds=0
    )
    empty = hostile_copy(genuine, rx.inbox, "empty", rows={"*": lambda lines: []}, manifest=later_snapshot)
    evaluate(instance, resources)
    assert held_rows(receiver_db) == {empty.name: False}

    newer = complete_for_yesterday(dsn, staging, media)
    assert newer.manifest.snapshot_time > read_manifest(empty).snapshot_time  # what "overtook" means
    rx.deliver(newer)
    evaluate(instance, resources)  # the newer complete loads; the held one still waits this tick
    assert ledger(receiver_db)[newer.manifest.backup_id] == "loaded" and empty.name not in ledger(receiver_db)
    before = counts(receiver_db)
    evaluate(instance, resources)
    assert empty.name not in ledger(receiver_db) and counts(receiver_db) == before
    assert (rx.quarantine / "complete" / empty.name).is_dir() and not empty.exists()


def _delete_share(dsn, table, share) -> int:
    with connect(dsn) as conn:
        n = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        gone = int(n * share)
        conn.execute(
            f'DELETE FROM "{table}" WHERE id IN (SELECT id FROM "{table}" ORDER BY id LIMIT %s)', (gone,)
        )
    return gone


def test_a_complete_deleting_most_of_a_table_is_held_and_a_tenth_loads(pg_cluster, receiver_db, tmp_path):
    (tmp_path / "s").mkdir()
    dsn, media, staging = new_sender(pg_cluster, tmp_path / "s", seed=61)
    traffic_at(dsn, media, 61, datetime.now(UTC) - timedelta(hours=3), BASELINE_OPS, 200)
    inbox, rx_media = tmp_path / "inbox", tmp_path / "media"
    rx_media.mkdir()
    go = dict(
        dsn=receiver_db,
        media_dir=rx_media,
        quarantine_dir=tmp_path / "q",
        deletion_limits=DeletionLimits(max_share=0.5, min_rows=5),
    )

    def deliver():
        built = complete_for_yesterday(dsn, staging, media)
        folder = inbox / "complete" / built.manifest.backup_id
        shutil.copytree(built.staged.root, folder)
        return folder

    receive(deliver(), **go)
    start = counts(receiver_db)[VOTES]
    assert start >= 20, "the traffic made enough votes for a share to mean something"

    tenth = _delete_share(dsn, VOTES, 0.1)
    loaded = receive(deliver(), **go)
    assert loaded.load.outcome == "loaded"
    assert counts(receiver_db)[VOTES] == start - tenth

    most = _delete_share(dsn, VOTES, 0.6)
    before = counts(receiver_db)
    folder = deliver()
    with pytest.raises(DeletionHeld) as held:
        receive(folder, **go)
    assert f"{VOTES}: {most} of {start - tenth} rows" in str(held.value)
    assert counts(receiver_db) == before and folder.is_dir()
    assert folder.name not in ledger(receiver_db) and held_rows(receiver_db) == {folder.name: False}


def _deep_json(doc_lines, depth=200_000):
    docs = [json.loads(line) for line in doc_lines]
    first = json.dumps(docs[0])
    deep = ("[" * depth + "]" * depth).encode()
    return [first[:-1].encode() + b', "deep": ' + deep + b"}"] + [json.dumps(d).encode() for d in docs[1:]]


def _long_names(doc):
    for entry in doc["files"]:
        if entry.get("table") == REPORT:
            entry["columns"] += [
                {"name": "x" * 63 + "a", "type": "text"},
                {"name": "x" * 63 + "b", "type": "text"},
            ]


def _long_name_rows(lines):
    docs = [json.loads(line) for line in lines]
    for d in docs:
        d["x" * 63 + "a"], d["x" * 63 + "b"] = "1", "2"
    return [json.dumps(d).encode() for d in docs]


@pytest.mark.parametrize(
    "tag, rows, manifest, said",
    [
        ("deep", {REPORT: _deep_json}, None, "stack depth"),
        ("longnames", {REPORT: _long_name_rows}, _long_names, "specified more than once"),
    ],
    ids=["json-nested-too-deeply", "column-names-equal-in-63-chars"],
)
def test_data_the_database_refuses_is_quarantined_not_retried(
    sender, receiver_db, tmp_path, tag, rows, manifest, said
):
    """And the media the backup installed before its load are gone again; the receiver's own
    file and a file it already had are as they were."""
    dsn, media, staging, key = sender
    rx = Receiver.under(receiver_db, tmp_path)
    partial = partial_for(dsn, staging, media, key, f"h{tag[:4]}")
    assert partial.manifest.media, "the partial carries media"
    (rx.media / "receivers-own.jpg").write_bytes(b"not the sender's")
    clash = partial.manifest.media[0].name  # a conflict: its kept-aside copy must go too
    (rx.media / clash).parent.mkdir(parents=True, exist_ok=True)
    (rx.media / clash).write_bytes(b"the receiver's version")
    media_before, tables_before = tree(rx.media), counts(receiver_db)

    folder = hostile_copy(partial, rx.inbox, tag, rows=rows, manifest=manifest)
    instance = dg.DagsterInstance.ephemeral()
    resources = rx.resources()
    data, [(_, run)] = evaluate(instance, resources)
    assert not run.success
    reason = (rx.quarantine / "partial" / folder.name / "REASON.txt").read_text()
    assert said in reason and "SQLSTATE" in reason
    assert not folder.exists()
    assert tree(rx.media) == media_before  # nothing of the backup's media left behind
    assert counts(receiver_db) == tables_before and ledger(receiver_db) == {}
    data, runs = evaluate(instance, resources, data.cursor)
    assert runs == []  # quarantined: no second attempt


def _bundle(path: Path, files: dict[str, bytes]) -> list[MediaEntry]:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return [MediaEntry(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()]


def test_conflicting_media_files_keep_every_copy_aside(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    name = "a/photo.jpg"
    (root / "a").mkdir()
    (root / name).write_bytes(b"the receiver's")
    second, third = b"a second version", b"a third version"
    # An earlier conflict whose sha256 began like the second's (12 hex digits can collide).
    squatter = root / f"{name}.conflict-{hashlib.sha256(second).hexdigest()[:12]}"
    squatter.write_bytes(b"an earlier kept-aside copy")

    kept = []
    for i, data in enumerate((second, third)):
        bundle = tmp_path / f"b{i}.tar"
        result = install_media(bundle, _bundle(bundle, {name: data}), root)
        [conflict] = result.conflicts
        kept.append(conflict.kept_as)
        assert (root / conflict.kept_as).read_bytes() == data
    assert (root / name).read_bytes() == b"the receiver's"
    assert squatter.read_bytes() == b"an earlier kept-aside copy"
    assert len({str(squatter.relative_to(root)), *kept}) == 3
