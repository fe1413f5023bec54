"""A hostile or broken sender's payloads (issue 16, items 3, 5 and 7's non-regular files):
table files that unpack far beyond their size, rows too long or too many, partial rows that
don't have their manifest's columns, FIFOs in place of files. Each is a real backup tampered
with and re-signed (sizes, sha256, rows), delivered to a loaded receiver: it is refused with
a reason naming the file and the bound, quarantined, and the receiver's tables, ledger and
media are exactly as before. Memory is measured where it is the point."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from arb_pipeline.fsutil import LineTooLongError, line_chunks
from arb_pipeline.ops.disk_guard import DiskFloor, DiskSpaceError, free_bytes
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import complete_for_yesterday
from arb_pipeline_tests.support.hostile import (
    Rx,
    copy_in,
    loaded_receiver,
    refused,
    resign,
    state,
    table_entry,
    tampered,
    write_manifest,
)

MB = 1024 * 1024


@pytest.fixture(scope="module")
def rx(pg_cluster, tmp_path_factory) -> Rx:
    """A receiver loaded with a genuine complete, and a genuine partial to tamper with."""
    return loaded_receiver(pg_cluster, tmp_path_factory.mktemp("hostile-payload"), seed=16)


def _frames(block: bytes, times: int) -> bytes:
    """``block`` repeated ``times`` times unpacked, as that many zstd frames (fast to build)."""
    return zstandard.ZstdCompressor().compress(block) * times


def _peak_rss_of_verify(folder: Path) -> tuple[int, str]:
    """Verify ``folder`` in a fresh process: (its peak RSS in bytes, the refusal). VmHWM, not
    getrusage: ru_maxrss survives exec, so it would report this test process's own peak."""
    code = (
        "import re, sys\n"
        "from arb_pipeline.package.verify import VerifyError, verify_files\n"
        "try:\n"
        "    verify_files(sys.argv[1]); print('accepted')\n"
        "except VerifyError as exc:\n"
        "    print(exc)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    *message, peak_kb = out.stdout.strip().splitlines()
    return int(peak_kb) * 1024, "\n".join(message)


# -- bounded resources -----------------------------------------------------------------------


def test_8_gib_of_newlines_with_matching_rows_is_refused_in_bounded_memory(rx):
    folder, doc = tampered(rx, rx.partial, "bombrows")
    entry = table_entry(doc)
    resign(folder, doc, entry, _frames(b"\n" * (128 * MB), 64), rows=8 * 1024 * MB)
    peak, message = _peak_rss_of_verify(folder)
    assert "ARB_MAX_TABLE_ROWS" in message and entry["name"] in message
    assert peak < 300 * MB
    refused(rx, folder, entry["name"], "ARB_MAX_TABLE_ROWS", "raise ARB_MAX_TABLE_ROWS on the receiver")


def test_8_gib_unpacked_from_a_small_file_stops_at_the_unpack_bound_in_bounded_memory(rx, monkeypatch):
    monkeypatch.setenv("ARB_MAX_ROW_MB", "1024")  # rows are long here: the unpack bound must trip
    folder, doc = tampered(rx, rx.partial, "bombbytes")
    entry = table_entry(doc)
    content = _frames(b"x" * (128 * MB - 1) + b"\n", 64)  # 64 long rows; the row bound is raised
    resign(folder, doc, entry, content, rows=64)
    peak, message = _peak_rss_of_verify(folder)
    assert "unpacks to more than" in message and "ARB_MAX_UNPACK_RATIO" in message, message
    assert peak < 300 * MB
    refused(rx, folder, entry["name"], "unpacks to more than")


def test_50m_tiny_rows_are_refused_before_the_database(rx):
    folder, doc = tampered(rx, rx.complete, "tinyrows")
    entry = table_entry(doc, table="AndroidRequests_report")
    rows = 50_000_000
    resign(folder, doc, entry, _frames(b"1\n" * 5_000_000, rows // 5_000_000), rows=rows)
    message = refused(rx, folder, entry["name"], "unpacks to more than")
    assert "refused at the first excess" in message


def test_more_rows_than_the_manifest_says_stop_at_the_first_excess(rx):
    folder, doc = tampered(rx, rx.partial, "morerows")
    entry = table_entry(doc)
    resign(folder, doc, entry, _frames(b"{}\n" * 1000, 1000), rows=10)
    refused(rx, folder, entry["name"], "holds more than 10 rows (the manifest says 10)")


def test_a_row_longer_than_the_bound_is_refused(rx, monkeypatch):
    monkeypatch.setenv("ARB_MAX_ROW_MB", "1")
    folder, doc = tampered(rx, rx.partial, "longrow")
    entry = table_entry(doc)
    long_value = os.urandom(3 * MB).hex()  # does not compress: the row bound, not the ratio, trips
    row = json.dumps({"id": 1, "x": long_value}).encode() + b"\n"
    resign(folder, doc, entry, zstandard.ZstdCompressor().compress(row), rows=1)
    refused(rx, folder, entry["name"], "holds a row longer than 1048576 bytes (ARB_MAX_ROW_MB)")


def test_line_splitting_joins_each_byte_once():
    """A 64 MB line read 64 KB at a time: the old splitter re-joined the pending line on every
    read (~32 GB copied); this one collects the pieces and joins them once."""
    copied = []

    class Counted(bytes):  # what the splitter does with a read is counted, not timed
        def __add__(self, other):
            copied.append(len(self) + len(other))
            return bytes(self) + bytes(other)

        def __radd__(self, other):
            copied.append(len(self) + len(other))
            return bytes(other) + bytes(self)

    line, piece = 64 * MB, 64 * 1024
    reads = iter([Counted(b"a" * piece)] * (line // piece - 1) + [Counted(b"a" * (piece - 1) + b"\nb\n")])
    out = list(line_chunks(lambda n: next(reads, b""), piece))
    assert [len(c) for c in out] == [line + 2]
    assert sum(copied) <= 2 * line  # linear: at most a constant number of copies per byte

    reads = iter([b"a" * piece] * 100)
    with pytest.raises(LineTooLongError):
        list(line_chunks(lambda n: next(reads, b""), piece, max_line=3 * piece))
    assert len(list(reads)) == 100 - 4  # stopped at the first read past the bound


def _sparse_tar(name: str, realsize: int) -> bytes:
    """A tar whose one PAX sparse (1.0) member stores 1 byte and unpacks to ``realsize``."""
    data = f"1\n{realsize - 1}\n1\n".encode().ljust(512, b"\0") + b"z"  # the map, then the byte
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size = len(data)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(realsize),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_media_bundle_cant_install_more_than_it_holds(rx):
    folder, doc = tampered(rx, rx.partial, "sparsemedia")
    bundle = next(f for f in doc["files"] if f["kind"] == "media")
    realsize = 64 * MB
    content = _sparse_tar("bomb.jpg", realsize)
    (folder / bundle["name"]).write_bytes(content)
    bundle.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest(), rows=1)
    unpacked = hashlib.sha256(b"\0" * (realsize - 1) + b"z").hexdigest()
    doc["media"]["files"] = [{"name": "bomb.jpg", "bytes": realsize, "sha256": unpacked}]
    write_manifest(folder, doc)
    refused(rx, folder, "an uncompressed tar can't install more than it holds")
    assert not (rx.media / "bomb.jpg").exists()


# -- partial rows match their manifest -------------------------------------------------------


def _rows(folder: Path, entry: dict) -> list[dict]:
    data = zstandard.ZstdDecompressor().decompressobj().decompress((folder / entry["name"]).read_bytes())
    return [json.loads(line) for line in data.splitlines()]


def _without_media(folder: Path, doc: dict) -> None:
    """Drop the media bundle: a backup refused at staging would leave its media installed until
    media install after the load commits (issue 16 item 6, not these tests' point)."""
    for f in [f for f in doc["files"] if f["kind"] == "media"]:
        (folder / f["name"]).unlink()
        doc["files"].remove(f)
    doc["media"]["files"] = []


def _rewrite_rows(folder: Path, doc: dict, entry: dict, rows: list[dict]) -> None:
    _without_media(folder, doc)
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    resign(folder, doc, entry, zstandard.ZstdCompressor().compress(content), rows=len(rows))


def _refused_with_rows(rx: Rx, unique: str, min_rows: int, change) -> None:
    """A genuine partial whose first table of ``min_rows`` rows or more ``change(rows, entry)``
    altered (it returns what the refusal must say): refused, nothing loaded."""
    folder, doc = tampered(rx, rx.partial, unique)
    entry = table_entry(doc, min_rows=min_rows)
    rows = _rows(folder, entry)
    expected = change(rows, entry)
    _rewrite_rows(folder, doc, entry, rows)
    refused(rx, folder, entry["name"], expected)


def test_a_partial_row_missing_a_column_is_refused_not_loaded_as_null(rx):
    def drop_a_column(rows, entry):
        dropped = next(c["name"] for c in entry["columns"] if c["name"] not in entry["primary_key"])
        del rows[1][dropped]
        return f"line 2 lacks column(s) {dropped!r}"

    _refused_with_rows(rx, "missingkey", 2, drop_a_column)


def test_a_partial_row_with_an_extra_key_is_refused(rx):
    def add_a_key(rows, entry):
        rows[-1]["intruder"] = 1
        return f"line {len(rows)} has unexpected column(s) 'intruder'"

    _refused_with_rows(rx, "extrakey", 1, add_a_key)


def test_a_partial_row_repeating_a_key_in_place_of_another_is_refused(rx):
    folder, doc = tampered(rx, rx.partial, "repeatkey")
    entry = table_entry(doc, min_rows=1)
    rows = _rows(folder, entry)
    key = entry["primary_key"][0]
    dropped = next(c["name"] for c in entry["columns"] if c["name"] != key)
    del rows[0][dropped]
    first = json.dumps(rows[0])[:-1] + f", {json.dumps(key)}: {json.dumps(rows[0][key])}}}"
    _without_media(folder, doc)
    content = b"".join((first if i == 0 else json.dumps(r)).encode() + b"\n" for i, r in enumerate(rows))
    resign(folder, doc, entry, zstandard.ZstdCompressor().compress(content), rows=len(rows))
    refused(rx, folder, entry["name"], f"line 1 lacks column(s) {dropped!r}; repeats column(s) {key!r}")


def test_rows_of_another_table_in_a_partial_file_are_refused(rx):
    folder, doc = tampered(rx, rx.partial, "othertable")
    tables = [f for f in doc["files"] if f["kind"] == "table" and f["rows"] > 0]
    victim, other = (
        tables[0],
        next(
            f
            for f in tables[1:]
            if {c["name"] for c in f["columns"]} != {c["name"] for c in tables[0]["columns"]}
        ),
    )
    _rewrite_rows(folder, doc, victim, _rows(folder, other))
    refused(rx, folder, victim["name"], "line 1", "every row must have exactly the manifest's columns")


# -- the disk floor, re-checked while installing and staging ------------------------------


def _waits_for_room(rx: Rx, folder: Path, floor: DiskFloor, *reason: str) -> None:
    """Receive ``folder`` against ``floor``: it stops with DiskSpaceError naming ``reason``,
    stays in the inbox untouched (the disk is the receiver's problem, not the backup's), and
    nothing of it is installed or loaded."""
    before, files = state(rx), sorted(p.name for p in folder.iterdir())
    with pytest.raises(DiskSpaceError) as raised:
        rx.receive(folder, disk_floor=floor)
    for part in reason:
        assert part in str(raised.value), raised.value
    assert sorted(p.name for p in folder.iterdir()) == files
    assert state(rx) == before
    with connect(rx.dsn) as conn:
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'arb_stage'").fetchone()[0]
    assert staging == 0


def test_media_bigger_than_the_room_above_the_floor_wait_and_install_nothing(rx):
    folder, doc = tampered(rx, rx.partial, "bigmedia")
    bundle = next(f for f in doc["files"] if f["kind"] == "media")
    data = os.urandom(16 * MB)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("big.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    doc["media"]["files"] = [
        {"name": "big.jpg", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]
    resign(folder, doc, bundle, out.getvalue())
    # The floor leaves 8 MB above it: the backup passes the first check, its 16 MB don't fit.
    floor = DiskFloor({"inbox": folder, "media folder": rx.media}, free_bytes(rx.media) - 8 * MB)
    _waits_for_room(rx, folder, floor, "media folder", "16.0 MiB of it needed now", "ARB_MIN_FREE_MB")
    assert not (rx.media / "big.jpg").exists()


def test_a_disk_that_fills_while_tables_are_written_stops_the_load_and_loses_nothing(rx):
    """The disk fills once the load has begun writing (the first session holding a transaction
    id in the receiver's database); partial and complete stop there, and the next try loads."""

    def measure(path) -> int:
        with connect(rx.dsn) as conn:
            writing = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        return 0 if writing else free_bytes(path)

    complete = complete_for_yesterday(rx.sender_dsn, rx.sender_staging, rx.sender_media).staged.root
    for src, unique in ((rx.partial, "fullpartial"), (complete, "fullcomplete")):
        folder, doc = tampered(rx, src, unique)
        write_manifest(folder, doc)
        floor = DiskFloor({"inbox": folder, "media folder": rx.media}, MB, measure)
        _waits_for_room(rx, folder, floor, "has 0 B free", "nothing was lost")
        shutil.rmtree(folder)


# -- files that are not regular files ----------------------------------------------------------


@pytest.fixture
def no_hang():
    """A FIFO opened for reading blocks until a writer comes: fail instead of hanging the suite."""

    def hung(*_):
        raise TimeoutError("verification blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_a_fifo_in_place_of_a_table_file_is_refused_without_blocking(rx, no_hang):
    folder, doc = tampered(rx, rx.partial, "fifotable")
    write_manifest(folder, doc)
    entry = table_entry(doc)
    (folder / entry["name"]).unlink()
    os.mkfifo(folder / entry["name"])
    refused(rx, folder, entry["name"], "is not a regular file")


def test_a_fifo_in_place_of_the_manifest_is_refused_without_blocking(rx, no_hang):
    folder, _ = tampered(rx, rx.partial, "fifomanifest")
    (folder / MANIFEST_NAME).unlink()
    os.mkfifo(folder / MANIFEST_NAME)
    refused(rx, folder, "manifest.json is not a regular file")


# -- the genuine backups still load ------------------------------------------------------------


def test_after_all_of_it_the_genuine_partial_and_complete_load_and_parity_holds(rx):
    """The module's tests all ran against this one receiver: the genuine backups that follow
    still load, and the receiver ends equal to its sender, tables and media."""
    received = rx.receive(copy_in(rx, rx.partial, rx.partial.name))
    assert received.load.outcome == "loaded"
    complete = complete_for_yesterday(rx.sender_dsn, rx.sender_staging, rx.sender_media).staged.root
    received = rx.receive(copy_in(rx, complete, complete.name))
    assert received.load.outcome == "loaded"
    with connect(rx.dsn) as conn:
        outcomes = dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())
    assert outcomes == {rx.complete.name: "loaded", rx.partial.name: "loaded", complete.name: "loaded"}
    parity = compare_tables(rx.sender_dsn, rx.dsn)
    assert parity.ok, parity
    assert compare_media(rx.sender_media, rx.media).ok
