"""Segmented complete files (extract/segments.py, load/segments.py) on real databases: a
frame the receiver already holds is not staged, anything that changed on either side is,
and every load ends in parity."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import zstandard

from arb_pipeline.extract import segments
from arb_pipeline.extract.segments import SegmentError, SegmentingSink, segment_bits
from arb_pipeline.load.checks import check_complete
from arb_pipeline.load.staging import MalformedFileError
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest, ManifestError
from arb_pipeline.package.reader import iter_table_chunks
from arb_pipeline.package.verify import VerifyError, verify_files
from arb_pipeline.package.writer import FramedTableSink, HashingWriter
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import P, complete_for_yesterday, load, seeded_sender
from arb_pipeline_tests.support.traffic import traffic

EVENTS = P + "eventforbusv2"


@pytest.fixture
def small_segments(monkeypatch):
    """The test database's tables are small: segment every table with an integer key, in
    ranges of at least 4 keys."""
    monkeypatch.setattr(segments, "SEGMENTED_TABLE_BYTES", 0)
    monkeypatch.setattr(segments, "MIN_SEGMENT_BITS", 2)
    monkeypatch.setattr(segments, "MIN_KEY_CORRELATION", 0.5)  # the traffic's votes moved some events


@pytest.fixture
def sender(sender_db, tmp_path, small_segments):
    with seeded_sender(sender_db, tmp_path, seed=7) as world:
        traffic(world[2], 120)
        with connect(world[0], autocommit=True) as conn:
            conn.execute("ANALYZE")  # the statistics say the rows lie in key order
        yield world


def _table_load(result, table=EVENTS):
    return next(t for t in result.tables if t.table == table)


def _complete(dsn, tmp_path, media):
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    verify_files(built.staged.root)
    return built


def _segment_of(entry, key):
    return next(s for s in entry.segments if s.key_low <= key <= s.key_high)


def test_frames_the_receiver_holds_are_not_staged_and_changes_on_both_sides_are(
    sender, receiver_db, tmp_path
):
    dsn, media, _ = sender
    first = _complete(dsn, tmp_path, media)
    entry = next(f for f in first.manifest.table_files() if f.table == EVENTS)
    assert len(entry.segments) >= 8 and first.manifest.format_version == 3
    # The file's sha256 is its frames': sha256sum each frame, then sha256sum those lines.
    raw = (first.staged.root / entry.name).read_bytes()
    frames = [hashlib.sha256(raw[s.offset : s.offset + s.bytes]).hexdigest() for s in entry.segments]
    assert frames == [s.sha256 for s in entry.segments]
    assert entry.sha256 == hashlib.sha256("".join(f"{d}\n" for d in frames).encode()).hexdigest()
    result = load(receiver_db, first)
    assert _table_load(result).held_segments == ()  # nothing recorded yet: everything staged
    with connect(receiver_db) as conn:
        recorded = conn.execute("SELECT count(*) FROM arb_segment_digest").fetchone()[0]
    assert recorded == sum(len(f.segments) for f in first.manifest.table_files())

    # Between two completes: on the sender an update, a delete and a new row; on the
    # receiver, a sender column changed behind the pipeline's back. Each in its own range.
    keys = [s.key_low for s in entry.segments]
    with connect(dsn) as conn:
        ids = [r[0] for r in conn.execute(f'SELECT id FROM "{EVENTS}" ORDER BY id')]
        in_segment = {s: [i for i in ids if s.key_low <= i <= s.key_high] for s in entry.segments}
        updated, deleted, drifted = (in_segment[entry.segments[n]][0] for n in (1, 3, 5))
        conn.execute(f'UPDATE "{EVENTS}" SET "eventConfirm" = "eventConfirm" + 1 WHERE id = %s', (updated,))
        conn.execute(
            f'DELETE FROM "{P}stadisticdatafromregistrationbus" WHERE "reportOfEvent_id" = %s', (deleted,)
        )
        conn.execute(f'DELETE FROM "{EVENTS}" WHERE id = %s', (deleted,))
    with connect(receiver_db) as conn:
        conn.execute(f'UPDATE "{EVENTS}" SET "eventDecline" = -9 WHERE id = %s', (drifted,))
    assert keys  # segments start at aligned keys

    second = _complete(dsn, tmp_path, media)
    entry2 = next(f for f in second.manifest.table_files() if f.table == EVENTS)
    result = load(receiver_db, second)
    events = _table_load(result)
    changed = {_segment_of(entry2, k).key_low for k in (updated, drifted)} | {
        s.key_low for s in entry2.segments if s.key_low <= deleted <= s.key_high
    }
    held = {s.key_low for s in events.held_segments}
    assert held and not held & changed
    assert held == {s.key_low for s in entry2.segments} - changed
    assert events.rows_in_backup == entry2.rows
    assert events.rows_deleted == 1 and events.rows_written == 2  # the update and the drift repaired
    assert compare_tables(dsn, receiver_db).ok
    checks = check_complete(receiver_db, second.staged.root, second.manifest, result)
    assert all(c.passed for c in checks.values()), [c.description for c in checks.values() if not c.passed]
    with connect(receiver_db) as conn:  # pruned to the newest complete's frames
        recorded = conn.execute(
            "SELECT count(DISTINCT backup_id), count(*) FROM arb_segment_digest"
        ).fetchone()
    assert recorded == (1, sum(len(f.segments) for f in second.manifest.table_files()))


def test_only_tables_whose_rows_lie_in_key_order_are_segmented(sender, tmp_path, monkeypatch):
    """The sender reads a segmented table in key order off its index: cheap only where the
    rows lie in about that order (PostgreSQL's statistics), as telemetry's do."""
    dsn, media, _ = sender
    monkeypatch.setattr(segments, "MIN_KEY_CORRELATION", 0.9)
    with connect(dsn) as conn:
        correlation = dict(
            conn.execute("SELECT tablename, correlation FROM pg_stats WHERE attname = 'id'").fetchall()
        )
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    cut = {f.table for f in built.manifest.table_files() if f.segments}
    assert correlation[EVENTS] < 0.9 and EVENTS not in cut
    assert f"{P}poseintrajectoryoftoken" in cut and correlation[f"{P}poseintrajectoryoftoken"] >= 0.9


def test_a_segment_changed_in_the_manifest_is_refused_by_verification(sender, tmp_path):
    dsn, media, _ = sender
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    doc = json.loads((built.staged.root / MANIFEST_NAME).read_bytes())
    entry = next(f for f in doc["files"] if f.get("table") == EVENTS)
    entry["segments"][2]["sha256"] = "0" * 64
    (built.staged.root / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(VerifyError, match="segment of keys .* sha256"):
        verify_files(built.staged.root)
    entry["segments"][2]["sha256"] = entry["segments"][3]["sha256"]
    entry["segments"][2]["rows"] += 1
    entry["segments"][3]["rows"] -= 1
    (built.staged.root / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(VerifyError, match="segment of keys"):
        verify_files(built.staged.root)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s[1].update(offset=s[1]["offset"] + 1), "tile the file"),
        (lambda s: s[1].update(key_low=s[1]["key_low"] + 1, key_high=s[1]["key_high"] + 1), "aligned"),
        (lambda s: s[1].update(key_high=s[1]["key_high"] + 1), "as wide"),
        (lambda s: s[0].update(rows=s[0]["rows"] + 1), "add up"),
    ],
)
def test_the_manifest_refuses_segments_that_do_not_tile_the_file(sender, tmp_path, change, message):
    dsn, media, _ = sender
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    doc = json.loads((built.staged.root / MANIFEST_NAME).read_bytes())
    change(next(f for f in doc["files"] if f.get("table") == EVENTS)["segments"])
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(doc)
    doc = json.loads((built.staged.root / MANIFEST_NAME).read_bytes())
    doc["format_version"] = 1  # an older format can't carry segments
    with pytest.raises(ManifestError, match="format_version"):
        Manifest.from_dict(doc)


def test_cutting_rows_in_key_order_into_frames_wherever_chunks_end(tmp_path):
    """Pure: keys in order, one frame per range of 2**bits keys, wherever the stream is cut."""
    rng = random.Random(3)
    keys = sorted(rng.sample(range(-500, 5000), 900))
    lines = b"".join(b"x%d\t%d\tv\\t%d\n" % (k, k, k) for k in keys)
    path = tmp_path / "f.zst"
    with open(path, "wb") as fh:
        writer = HashingWriter(fh)
        cutter = SegmentingSink(FramedTableSink(writer, 1, 0), 7, 1)
        at = 0
        while at < len(lines):
            step = rng.randint(1, 400)
            cutter.write_lines(lines[at : at + step])
            at += step
        cutter.close()
    assert [s.key_low for s in cutter.segments] == sorted({(k >> 7) << 7 for k in keys})
    assert (
        sum(s.rows for s in cutter.segments) == len(keys)
        and cutter.segments[-1].offset + cutter.segments[-1].bytes == writer.bytes
    )
    for seg in cutter.segments:
        got = b"".join(iter_table_chunks(path, segments=[seg])).splitlines()
        assert [int(x.split(b"\t")[1]) for x in got] == [k for k in keys if seg.key_low <= k <= seg.key_high]
    assert (
        zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()[: cutter.segments[0].bytes])
    )
    assert b"".join(iter_table_chunks(path)) == lines
    with pytest.raises(SegmentError, match="key order"):
        bad = SegmentingSink(FramedTableSink(HashingWriter(open(tmp_path / "g", "wb")), 1, 0), 2, 0)
        bad.write_lines(b"100\ta\n1\tb\n")


def test_segment_width_is_a_power_of_two_that_changes_only_when_the_table_doubles():
    assert segment_bits(1, 8_000_000) == 18  # 31 ranges of 262,144 keys
    assert segment_bits(1, 8_388_607) == 18 and segment_bits(1, 8_388_608) == 19
    assert segment_bits(-100, 5) == segments.MIN_SEGMENT_BITS


def test_a_frame_holding_rows_of_another_range_is_refused(sender, receiver_db, tmp_path):
    """A frame's rows outside its segment's range could land in a range the receiver holds
    and be neither compared nor kept from deletion: the load refuses the file, loads nothing."""
    dsn, media, _ = sender
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    root = built.staged.root
    doc = json.loads((root / MANIFEST_NAME).read_bytes())
    entry = next(f for f in doc["files"] if f.get("table") == EVENTS)
    path = root / entry["name"]
    raw = path.read_bytes()
    frames = [
        zstandard.ZstdDecompressor().decompressobj().decompress(raw[s["offset"] : s["offset"] + s["bytes"]])
        for s in entry["segments"]
    ]
    moved = frames[1].splitlines(keepends=True)[0]  # the first row of the second range, into the first
    frames[0], frames[1] = frames[0] + moved, frames[1][len(moved) :]
    with open(path, "wb") as fh:
        writer = HashingWriter(fh)
        sink = FramedTableSink(writer, 1, 0)
        for seg, rows in zip(entry["segments"], frames, strict=True):
            sink.start_frame()
            sink.write_lines(rows)
            seg["offset"], seg["bytes"], seg["sha256"] = sink.end_frame()
            seg["rows"] = rows.count(b"\n")
    entry["bytes"], entry["sha256"] = writer.bytes, sink.file_sha256
    (root / MANIFEST_NAME).write_text(json.dumps(doc))
    verify_files(root)  # the frames are whole and as the manifest says: only the load can tell
    with pytest.raises(MalformedFileError, match="segment of keys 0 to .* holds"):
        load(receiver_db, built)
    with connect(receiver_db) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{EVENTS}"').fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM arb_loaded_backup").fetchone()[0] == 0
