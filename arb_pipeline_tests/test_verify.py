"""Verification of a backup against its manifest and the receiver's schema, and quarantine.

Real backups are built once per module (a partial and a complete from a seeded sender,
plus a partial from a sender with one column more); each test tampers with its own copy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.extract.build import build_complete, build_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest
from arb_pipeline.package.schema_check import SchemaMismatch, check_schema
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.quarantine import QuarantineError, list_quarantined, quarantine, requeue
from arb_pipeline_tests.support.postgres import fresh_db

REPORT = "AndroidRequests_report"


def _pg_dump() -> str:
    from arb_pipeline.dev.postgres import find_bin_dir

    return str(find_bin_dir() / "pg_dump")


@pytest.fixture(scope="module")
def built(pg_cluster, tmp_path_factory):
    """{"partial": dir, "complete": dir, "partial_extra": dir} of real, untouched backups."""
    base = tmp_path_factory.mktemp("verify-built")
    dsn = fresh_db(pg_cluster, "sender")
    media = base / "media"
    media.mkdir()
    with connect(dsn) as conn:
        seed_reference(conn, seed=11, scale=0.02)
    with Workload(dsn, media, seed=11, clock_offset=timedelta(minutes=-6)) as work:
        start = work.app_now()
        for _ in range(120):
            work.step()
    lo = start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
    window = Window(lo, lo + timedelta(minutes=5))
    key = lo.strftime("%Y-%m-%d-%H-%M")
    out = {}
    out["partial"] = build_partial(
        dsn,
        base / "inbox" / "partial",
        partition_key=key,
        window=window,
        unique="aaa1",
        media_dir=media,
        sender_id="t",
    ).staged.root
    day = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    out["complete"] = build_complete(
        dsn,
        base / "inbox" / "complete",
        partition_key=day.strftime("%Y-%m-%d"),
        window=Window(day, day + timedelta(days=1)),
        unique="ccc1",
        media_dir=media,
        sender_id="t",
        pg_dump=_pg_dump(),
    ).staged.root
    # The sender gains a column the receiver doesn't have yet.
    with connect(dsn) as conn:
        conn.execute(f'ALTER TABLE "{REPORT}" ADD COLUMN sender_note text')
        conn.execute(f"UPDATE \"{REPORT}\" SET sender_note = 'n'")
        conn.commit()
    out["partial_extra"] = build_partial(
        dsn,
        base / "inbox" / "partial",
        partition_key=key,
        window=window,
        unique="bbb1",
        media_dir=media,
        sender_id="t",
    ).staged.root
    return out


@pytest.fixture
def backup(built, tmp_path):
    """A private copy: backup("partial") -> <tmp>/inbox/partial/<id>."""

    def copy(kind: str = "partial") -> Path:
        src = built[kind]
        dest = tmp_path / "inbox" / src.parent.name / src.name
        shutil.copytree(src, dest)
        return dest

    return copy


def _rewrite_manifest(folder: Path, change) -> None:
    doc = json.loads((folder / MANIFEST_NAME).read_bytes())
    change(doc)
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def _entry(doc: dict, table: str) -> dict:
    return next(f for f in doc["files"] if f.get("table") == table)


def _table_with_rows(folder: Path) -> dict:
    m = Manifest.from_json((folder / MANIFEST_NAME).read_bytes())
    f = next(f for f in m.table_files() if f.rows and f.rows >= 2)
    return {"name": f.name, "table": f.table, "rows": f.rows, "bytes": f.bytes}


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# -- files ---------------------------------------------------------------------------


def test_good_backups_verify_and_fit_the_receiver(backup, receiver_db):
    for kind in ("partial", "complete"):
        folder = backup(kind)
        manifest = verify_files(folder)
        assert manifest.backup_id == folder.name and manifest.kind == kind
        with connect(receiver_db) as conn:
            plan = check_schema(manifest, conn)
        assert set(plan.columns) == {f.table for f in manifest.table_files()}
        assert plan.ignored == {} and plan.type_changes == {} and plan.warnings() == []
        report = next(f for f in manifest.table_files() if f.table == REPORT)
        assert plan.columns[REPORT] == report.columns and plan.primary_key[REPORT] == ("id",)
    # The complete's media, schema and restore files were all checked too.
    assert {f.kind for f in manifest.files} >= {"table", "schema", "restore", "media"}


def test_a_flipped_byte_is_a_sha256_mismatch(backup):
    folder = backup("partial")
    t = _table_with_rows(folder)
    path = folder / t["name"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(VerifyError) as exc:
        verify_files(folder)
    msg = str(exc.value)
    assert t["name"] in msg and "sha256" in msg and folder.name in msg
    assert "re-run the sender's partial partition" in msg
    assert "quarantined" not in msg, (
        "verify_files only says what is wrong; the receiver quarantines and says where"
    )
    assert exc.value.backup_at_fault and exc.value.file == t["name"] and exc.value.backup_id == folder.name


def test_a_truncated_file_names_the_bytes(backup):
    folder = backup("complete")
    media = next(
        f for f in Manifest.from_json((folder / MANIFEST_NAME).read_bytes()).files if f.kind == "media"
    )
    with open(folder / media.name, "r+b") as fh:
        fh.truncate(media.bytes - 100)
    with pytest.raises(
        VerifyError,
        match=rf"{media.name}: size differs: the manifest says {media.bytes} bytes, "
        rf"the file has {media.bytes - 100} bytes",
    ):
        verify_files(folder)


def test_a_consistent_manifest_with_a_row_missing_is_caught_by_the_row_count(backup):
    import hashlib

    folder = backup("partial")
    t = _table_with_rows(folder)
    path = folder / t["name"]
    lines = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().splitlines(keepends=True)
    assert len(lines) == t["rows"]
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines[1:])))
    data = path.read_bytes()

    def change(doc):
        _entry(doc, t["table"]).update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    _rewrite_manifest(folder, change)
    with pytest.raises(
        VerifyError,
        match=rf"{t['name']}: rows differ: the manifest says {t['rows']} rows, "
        rf"the file holds {t['rows'] - 1} lines",
    ):
        verify_files(folder)


def test_a_truncated_zstd_stream_is_named_not_a_raw_zstd_error(backup):
    import hashlib

    folder = backup("partial")
    t = _table_with_rows(folder)
    path = folder / t["name"]
    data = path.read_bytes()[:-5]
    path.write_bytes(data)
    _rewrite_manifest(
        folder,
        lambda doc: _entry(doc, t["table"]).update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest()),
    )
    with pytest.raises(VerifyError, match=rf"{t['name']}: ends in the middle of a zstd frame"):
        verify_files(folder)
    path.write_bytes(b"not zstd at all")
    _rewrite_manifest(
        folder,
        lambda doc: _entry(doc, t["table"]).update(
            bytes=15, sha256=hashlib.sha256(b"not zstd at all").hexdigest()
        ),
    )
    with pytest.raises(VerifyError, match=rf"{t['name']}: is not a valid zstd stream"):
        verify_files(folder)


def test_missing_extra_and_temporary_files(backup):
    folder = backup("partial")
    (folder / "tables" / ".AndroidRequests_report.jsonl.zst.1a2b3c4d.part").write_bytes(b"upload in progress")
    (folder / ".manifest.json.99.part").write_bytes(b"{")
    verify_files(folder)  # temporaries are ignored
    (folder / "tables" / "stray.jsonl.zst").write_bytes(b"x")
    with pytest.raises(
        VerifyError, match=r"unexpected file\(s\) not listed in the manifest: tables/stray.jsonl.zst"
    ):
        verify_files(folder)
    (folder / "tables" / "stray.jsonl.zst").unlink()
    (folder / "extra_folder").mkdir()
    with pytest.raises(VerifyError, match="unexpected .*extra_folder/"):
        verify_files(folder)
    (folder / "extra_folder").rmdir()
    t = _table_with_rows(folder)
    (folder / t["name"]).unlink()
    with pytest.raises(VerifyError, match=rf"file {t['name']}: is missing"):
        verify_files(folder)


def test_a_symlink_in_place_of_a_listed_file_is_refused(backup, tmp_path):
    folder = backup("partial")
    t = _table_with_rows(folder)
    outside = tmp_path / "outside.zst"
    shutil.move(folder / t["name"], outside)
    os.symlink(outside, folder / t["name"])
    with pytest.raises(VerifyError, match=rf"{t['name']}: is a symlink"):
        verify_files(folder)


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda raw: b"{not json", "malformed manifest: manifest is not valid JSON"),
        (
            lambda raw: raw.replace(b'"format_version": 1', b'"format_version": 99'),
            "format_version 99 is not supported",
        ),
        (
            lambda raw: raw.replace(b'"name": "tables/', b'"name": "../tables/', 1),
            "is not a safe relative file name",
        ),
    ],
)
def test_a_malformed_manifest_is_a_verify_error(backup, change, expected):
    folder = backup("partial")
    raw = json.dumps(json.loads((folder / MANIFEST_NAME).read_bytes()), indent=1).encode()
    (folder / MANIFEST_NAME).write_bytes(change(raw))
    with pytest.raises(VerifyError, match=expected) as exc:
        verify_files(folder)
    assert exc.value.backup_at_fault and folder.name in str(exc.value) and MANIFEST_NAME in str(exc.value)


def test_a_missing_manifest_and_a_foreign_backup_id(backup):
    folder = backup("partial")
    other = folder.with_name(folder.name.replace("aaa1", "zzz9"))
    folder.rename(other)
    with pytest.raises(VerifyError, match="the manifest's backup_id is .*, not the folder's name"):
        verify_files(other)
    wrong_kind = other.parent.parent / "complete" / folder.name
    wrong_kind.parent.mkdir()
    other.rename(wrong_kind)
    with pytest.raises(VerifyError, match="a partial backup in the inbox's complete folder"):
        verify_files(wrong_kind)
    (wrong_kind / MANIFEST_NAME).unlink()
    with pytest.raises(VerifyError, match=f"{MANIFEST_NAME} is missing"):
        verify_files(wrong_kind)
    wrong_kind.rename(other)
    with pytest.raises(VerifyError, match=f"{MANIFEST_NAME} is missing"):
        verify_files(other)


# -- schema ---------------------------------------------------------------------------


def test_an_unknown_table_is_a_clear_error(backup, receiver_db):
    folder = backup("partial")
    new = "AndroidRequests_nosuchtable"
    old_name = f"tables/{REPORT}.jsonl.zst"
    (folder / old_name).rename(folder / f"tables/{new}.jsonl.zst")

    def change(doc):
        _entry(doc, REPORT).update(table=new, name=f"tables/{new}.jsonl.zst")
        doc["tables_order"] = [new if t == REPORT else t for t in doc["tables_order"]]

    _rewrite_manifest(folder, change)
    manifest = verify_files(folder)  # the files are intact
    with connect(receiver_db) as conn, pytest.raises(VerifyError) as exc:
        check_schema(manifest, conn)
    assert (
        f"unknown table {new}: the receiver has no such table; add a receiver migration or remove it "
        "from the sender's catalog"
    ) in str(exc.value)


def test_a_receiver_only_table_is_never_a_target(backup, receiver_db):
    folder = backup("partial")
    manifest = verify_files(folder)
    with (
        connect(receiver_db) as conn,
        pytest.raises(VerifyError, match=f"unknown table {REPORT}: the receiver does not replicate it"),
    ):
        check_schema(manifest, conn, replicated_tables=set(manifest.tables_order) - {REPORT})


def test_an_extra_sender_column_is_ignored_with_a_warning(backup, receiver_db, caplog):
    folder = backup("partial_extra")
    manifest = verify_files(folder)
    with connect(receiver_db) as conn:
        plan = check_schema(manifest, conn)
    assert plan.ignored == {REPORT: ("sender_note",)}
    assert "sender_note" not in [c.name for c in plan.columns[REPORT]]
    report = next(f for f in manifest.table_files() if f.table == REPORT)
    assert [c.name for c in plan.columns[REPORT]] == [
        c.name for c in report.columns if c.name != "sender_note"
    ]
    assert any("sender_note" in r.getMessage() for r in caplog.records)


def test_a_type_difference_is_recorded_not_fatal(backup, receiver_db):
    folder = backup("partial")
    manifest = verify_files(folder)
    with connect(receiver_db) as conn:
        conn.execute(f'ALTER TABLE "{REPORT}" ALTER COLUMN message TYPE varchar(2000)')
        conn.commit()
        plan = check_schema(manifest, conn)
    [change] = plan.type_changes[REPORT]
    assert change.column == "message" and change.receiver_type == "character varying(2000)"
    assert change.backup_type != change.receiver_type and "message" in plan.warnings()[0]


def test_a_receiver_column_the_backup_lacks_is_a_schema_mismatch(backup, receiver_db):
    folder = backup("partial")
    manifest = verify_files(folder)
    with connect(receiver_db) as conn:
        conn.execute(f'ALTER TABLE "{REPORT}" ADD COLUMN x int NOT NULL DEFAULT 0')
        conn.execute(f'ALTER TABLE "{REPORT}" ALTER COLUMN x DROP DEFAULT')
        conn.commit()
        with pytest.raises(SchemaMismatch) as exc:
            check_schema(manifest, conn)
    assert isinstance(exc.value, VerifyError) and exc.value.backup_at_fault is False
    assert str(exc.value) == (
        f"receiver table {REPORT} requires column x that backup {folder.name} does not "
        "carry: make x nullable or give it a default (`arb migrate --dry-run` lists what each table lacks)"
    )


def test_a_different_primary_key_is_refused(backup, receiver_db):
    folder = backup("partial")
    _rewrite_manifest(folder, lambda doc: _entry(doc, REPORT).update(primary_key=["timeStamp"]))
    manifest = Manifest.from_json((folder / MANIFEST_NAME).read_bytes())
    with (
        connect(receiver_db) as conn,
        pytest.raises(
            VerifyError,
            match=r"primary key differs: the backup's is "
            r"\(timeStamp\), the receiver's is \(id\)",
        ),
    ):
        check_schema(manifest, conn)


# -- quarantine ------------------------------------------------------------------------


def test_quarantine_keeps_every_byte_and_requeue_puts_it_back(backup, tmp_path):
    folder = backup("partial")
    inbox = folder.parent.parent
    before = _tree(folder)
    qroot = tmp_path / "quarantine"
    dest = quarantine(folder, qroot, "backup X: file Y: sha256 differs")
    assert dest == qroot / "partial" / folder.name and not folder.exists()
    after = _tree(dest)
    reason = after.pop("REASON.txt").decode()
    assert after == before
    assert "sha256 differs" in reason and "UTC" in reason and f"arb requeue {folder.name}" in reason
    assert list_quarantined(qroot) == [("partial", folder.name, "backup X: file Y: sha256 differs")]

    # The same backup arriving and failing again gets a suffix; nothing is overwritten.
    again = backup("partial")
    dest2 = quarantine(again, qroot, "second time")
    assert dest2.name == folder.name + ".2"
    assert [q.name for q in list_quarantined(qroot)] == [folder.name, folder.name + ".2"]
    with pytest.raises(QuarantineError, match="is not in the quarantine"):
        requeue(qroot, "nope", inbox)
    back = requeue(qroot, folder.name, inbox)
    assert back == folder and _tree(back) == before
    with pytest.raises(QuarantineError, match="the inbox already has"):
        requeue(qroot, folder.name + ".2", inbox)
    assert (qroot / "partial" / (folder.name + ".2") / "REASON.txt").exists()
    verify_files(back)


def test_requeue_refuses_ambiguity_and_unknown_ids(backup, tmp_path):
    qroot = tmp_path / "q"
    with pytest.raises(QuarantineError, match="is not in the quarantine"):
        requeue(qroot, "partial-2024-01-01-00-00-abc", tmp_path / "inbox")
    first = backup("partial")
    name = first.name
    quarantine(first, qroot, "one")
    (qroot / "partial" / name).rename(qroot / "partial" / (name + ".5"))
    quarantine(backup("partial"), qroot, "two")
    (qroot / "partial" / name).rename(qroot / "partial" / (name + ".6"))
    with pytest.raises(QuarantineError, match="quarantined 2 times"):
        requeue(qroot, name, tmp_path / "inbox")
    assert requeue(qroot, name + ".6", tmp_path / "inbox") == tmp_path / "inbox" / "partial" / name


def test_quarantine_across_filesystems_copies_then_removes(backup, tmp_path, monkeypatch):
    folder = backup("complete")
    before = _tree(folder)
    real_rename = os.rename

    def rename(src, dst, *a, **kw):
        if Path(src) == folder:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(os, "rename", rename)
    dest = quarantine(folder, tmp_path / "q", "cross-device")
    assert not folder.exists()
    after = _tree(dest)
    after.pop("REASON.txt")
    assert after == before
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_a_backup_bringing_its_own_reason_file_keeps_it(backup, tmp_path):
    folder = backup("partial")
    (folder / "REASON.txt").write_text("the sender's own file")
    dest = quarantine(folder, tmp_path / "q", "extra file")
    assert (dest / "REASON.txt").read_text() == "the sender's own file"
    assert "extra file" in (dest / "REASON.2.txt").read_text()
    assert list_quarantined(tmp_path / "q")[0].reason == "extra file"
    back = requeue(tmp_path / "q", folder.name, tmp_path / "inbox")
    assert (back / "REASON.txt").read_text() == "the sender's own file" and not (
        back / "REASON.2.txt"
    ).exists()


def test_two_files_for_one_table_are_refused(backup):
    folder = backup("partial")

    def change(doc):
        dup = dict(_entry(doc, REPORT))
        dup["name"] = "tables/copy.jsonl.zst"
        doc["files"].append(dup)

    shutil.copy(folder / f"tables/{REPORT}.jsonl.zst", folder / "tables/copy.jsonl.zst")
    _rewrite_manifest(folder, change)
    with pytest.raises(VerifyError, match=f"more than one file for table\\(s\\) {REPORT}"):
        verify_files(folder)
