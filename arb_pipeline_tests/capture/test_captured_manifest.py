"""The manifest's change-capture fields: written as parsed, and strict (issue 18)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from arb_pipeline.package.manifest import CaptureRange, ColumnSpec, FileEntry, Manifest, ManifestError

T0 = datetime(2026, 12, 2, 10, 5, tzinfo=timezone.utc)
SHA = "0" * 64


def _captured(**kw) -> Manifest:
    cols = (ColumnSpec("id", "integer"), ColumnSpec("arb_commit_lsn", "pg_lsn"))
    files = (
        FileEntry("tables/t.copy.zst", "table", 10, SHA, 1, "t", "copy-text", cols, ("id",)),
        FileEntry("tables/t.deleted.copy.zst", "deletes", 10, SHA, 1, "t", "copy-text", cols, ("id",)),
    )
    base = dict(
        backup_id="partial-2026-12-02-10-05-abc1",
        kind="partial",
        partition_key="2026-12-02-10-05",
        window_start=T0,
        window_end=T0 + timedelta(minutes=5),
        extract_from=T0,
        snapshot_time=T0 + timedelta(minutes=6),
        sender_id="s",
        created_by="test",
        files=files,
        tables_order=("t",),
        source="capture",
        capture=CaptureRange("slot", "0/16B3748", "0/16B9000", 2, "0/16B3800", "0/16B8F00"),
    )
    base.update(kw)
    return Manifest(**base)


def _doc(m: Manifest) -> dict:
    return json.loads(m.to_json())


def test_captured_manifest_round_trips_as_version_2_and_timestamp_ones_stay_version_1():
    m = _captured()
    doc = _doc(m)
    assert doc["format_version"] == 2 and doc["source"] == "capture"
    assert Manifest.from_json(m.to_json()) == m
    assert [f.kind for f in m.delete_files()] == ["deletes"]
    plain = _captured(source="timestamp", capture=None, files=m.files[:1])
    assert "source" not in _doc(plain) and _doc(plain)["format_version"] == 1


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.update(format_version=1), "does not fit source"),
        (lambda d: d["capture"].update(to_lsn="0/xyz"), r"to_lsn .* is not an LSN"),
        (lambda d: d["capture"].pop("slot"), r"capture.slot is missing"),
        (lambda d: d.pop("capture"), "with capture"),
        (lambda d: d.update(capture_lsn="0/1"), "with capture and no capture_lsn"),
        (lambda d: d.update(source="wal"), "source is 'wal'"),
        (lambda d: (d.pop("source"), d.update(format_version=1)), "only for captured partials"),
    ],
)
def test_capture_fields_are_parsed_strictly(change, expected):
    doc = _doc(_captured())
    change(doc)
    with pytest.raises(ManifestError, match=expected):
        Manifest.from_dict(doc)


def test_delete_files_belong_to_captured_partials_and_capture_lsn_to_completes():
    doc = _doc(_captured(source="timestamp", capture=None))
    with pytest.raises(ManifestError, match="only captured partials carry delete files"):
        Manifest.from_dict(doc)
    doc = _doc(_captured(source="timestamp", capture=None, files=_captured().files[:1]))
    doc["capture_lsn"] = "0/16B3748"
    with pytest.raises(ManifestError, match="capture_lsn is only for completes"):
        Manifest.from_dict(doc)
