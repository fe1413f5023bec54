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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.fsutil import LineTooLongError, line_chunks
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.verify import VerifyError
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline_tests.support.backups import complete_for_yesterday, new_sender, partial_for, window_of
from arb_pipeline_tests.support.postgres import fresh_db
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

UTC = timezone.utc
REPLICATED = sorted(current_catalog().table_names)
MB = 1024 * 1024


@dataclass
class Rx:
    dsn: str
    inbox: Path
    media: Path
    quarantine: Path
    partial: Path  # genuine, never loaded here
    complete: Path  # genuine, loaded


@pytest.fixture(scope="module")
def rx(pg_cluster, tmp_path_factory) -> Rx:
    """A receiver loaded with a genuine complete, and a genuine partial to tamper with."""
    root = tmp_path_factory.mktemp("hostile-payload")
    dsn, media, staging = new_sender(pg_cluster, root, seed=16)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    complete = complete_for_yesterday(dsn, staging, media).staged.root  # older: the partial applies
    traffic_at(dsn, media, 16, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 120)
    partial = partial_for(dsn, staging, media, key, "hp1").staged.root
    r = Rx(
        fresh_db(pg_cluster, "receiver"),
        root / "inbox",
        root / "rx-media",
        root / "quarantine",
        partial,
        complete,
    )
    r.media.mkdir()
    loaded = _copy(r, complete, complete.name)
    receive(loaded, dsn=r.dsn, media_dir=r.media, quarantine_dir=r.quarantine)
    return r


def _copy(rx: Rx, src: Path, backup_id: str) -> Path:
    kind = backup_id.split("-", 1)[0]
    dest = rx.inbox / kind / backup_id
    shutil.copytree(src, dest)
    return dest


def _tampered(rx: Rx, src: Path, unique: str) -> tuple[Path, dict]:
    """A copy of ``src`` under a new backup id (so no ledger row matches it), and its manifest."""
    doc = json.loads((src / MANIFEST_NAME).read_bytes())
    backup_id = doc["backup_id"].rsplit("-", 1)[0] + "-" + unique
    folder = _copy(rx, src, backup_id)
    doc["backup_id"] = backup_id
    return folder, doc


def _table_entry(doc: dict, *, min_rows: int = 0, table: str | None = None) -> dict:
    return next(
        f
        for f in doc["files"]
        if f["kind"] == "table" and f["rows"] >= min_rows and (table is None or f["table"] == table)
    )


def _resign(folder: Path, doc: dict, entry: dict, content: bytes, rows: int) -> None:
    """Put ``content`` (already zstd) in the entry's file and make the manifest agree with it."""
    (folder / entry["name"]).write_bytes(content)
    entry.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest(), rows=rows)
    if "fingerprint" in entry:
        entry["fingerprint"]["rows"] = rows
    _write_manifest(folder, doc)


def _write_manifest(folder: Path, doc: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def _frames(block: bytes, times: int) -> bytes:
    """``block`` repeated ``times`` times unpacked, as that many zstd frames (fast to build)."""
    return zstandard.ZstdCompressor().compress(block) * times


def _state(rx: Rx) -> dict:
    with connect(rx.dsn) as conn:
        counts = {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            for t in REPLICATED
        }
        ledger = conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup ORDER BY 1").fetchall()
    media = sorted(p.relative_to(rx.media).as_posix() for p in rx.media.rglob("*"))
    return {"tables": counts, "ledger": ledger, "media": media}


def _refused(rx: Rx, folder: Path, *reason: str) -> str:
    """Receive ``folder``: it must be refused and quarantined, naming ``reason``; nothing changes."""
    before = _state(rx)
    with pytest.raises(VerifyError) as raised:
        receive(folder, dsn=rx.dsn, media_dir=rx.media, quarantine_dir=rx.quarantine)
    message = str(raised.value)
    for part in reason:
        assert part in message, message
    assert not folder.exists()
    moved = rx.quarantine / folder.parent.name / folder.name
    assert moved.is_dir() and reason[0] in (moved / "REASON.txt").read_text()
    assert _state(rx) == before
    return message


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
    folder, doc = _tampered(rx, rx.partial, "bombrows")
    entry = _table_entry(doc)
    _resign(folder, doc, entry, _frames(b"\n" * (128 * MB), 64), rows=8 * 1024 * MB)
    peak, message = _peak_rss_of_verify(folder)
    assert "ARB_MAX_TABLE_ROWS" in message and entry["name"] in message
    assert peak < 300 * MB
    _refused(rx, folder, entry["name"], "ARB_MAX_TABLE_ROWS", "raise ARB_MAX_TABLE_ROWS on the receiver")


def test_8_gib_unpacked_from_a_small_file_stops_at_the_unpack_bound_in_bounded_memory(rx, monkeypatch):
    monkeypatch.setenv("ARB_MAX_ROW_MB", "1024")  # rows are long here: the unpack bound must trip
    folder, doc = _tampered(rx, rx.partial, "bombbytes")
    entry = _table_entry(doc)
    content = _frames(b"x" * (128 * MB - 1) + b"\n", 64)  # 64 long rows; the row bound is raised
    _resign(folder, doc, entry, content, rows=64)
    peak, message = _peak_rss_of_verify(folder)
    assert "unpacks to more than" in message and "ARB_MAX_UNPACK_RATIO" in message, message
    assert peak < 300 * MB
    _refused(rx, folder, entry["name"], "unpacks to more than")


def test_50m_tiny_rows_are_refused_before_the_database(rx):
    folder, doc = _tampered(rx, rx.complete, "tinyrows")
    entry = _table_entry(doc, table="AndroidRequests_report")
    rows = 50_000_000
    _resign(folder, doc, entry, _frames(b"1\n" * 5_000_000, rows // 5_000_000), rows=rows)
    message = _refused(rx, folder, entry["name"], "unpacks to more than")
    assert "refused at the first excess" in message


def test_more_rows_than_the_manifest_says_stop_at_the_first_excess(rx):
    folder, doc = _tampered(rx, rx.partial, "morerows")
    entry = _table_entry(doc)
    _resign(folder, doc, entry, _frames(b"{}\n" * 1000, 1000), rows=10)
    _refused(rx, folder, entry["name"], "holds more than 10 rows (the manifest says 10)")


def test_a_row_longer_than_the_bound_is_refused(rx, monkeypatch):
    monkeypatch.setenv("ARB_MAX_ROW_MB", "1")
    folder, doc = _tampered(rx, rx.partial, "longrow")
    entry = _table_entry(doc)
    long_value = os.urandom(3 * MB).hex()  # does not compress: the row bound, not the ratio, trips
    row = json.dumps({"id": 1, "x": long_value}).encode() + b"\n"
    _resign(folder, doc, entry, zstandard.ZstdCompressor().compress(row), rows=1)
    _refused(rx, folder, entry["name"], "holds a row longer than 1048576 bytes (ARB_MAX_ROW_MB)")


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
    folder, doc = _tampered(rx, rx.partial, "sparsemedia")
    bundle = next(f for f in doc["files"] if f["kind"] == "media")
    realsize = 64 * MB
    content = _sparse_tar("bomb.jpg", realsize)
    (folder / bundle["name"]).write_bytes(content)
    bundle.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest(), rows=1)
    unpacked = hashlib.sha256(b"\0" * (realsize - 1) + b"z").hexdigest()
    doc["media"]["files"] = [{"name": "bomb.jpg", "bytes": realsize, "sha256": unpacked}]
    _write_manifest(folder, doc)
    _refused(rx, folder, "an uncompressed tar can't install more than it holds")
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
    _resign(folder, doc, entry, zstandard.ZstdCompressor().compress(content), rows=len(rows))


def test_a_partial_row_missing_a_column_is_refused_not_loaded_as_null(rx):
    folder, doc = _tampered(rx, rx.partial, "missingkey")
    entry = _table_entry(doc, min_rows=2)
    rows = _rows(folder, entry)
    dropped = next(c["name"] for c in entry["columns"] if c["name"] not in entry["primary_key"])
    del rows[1][dropped]
    _rewrite_rows(folder, doc, entry, rows)
    _refused(rx, folder, entry["name"], f"line 2 lacks column(s) {dropped!r}")


def test_a_partial_row_with_an_extra_key_is_refused(rx):
    folder, doc = _tampered(rx, rx.partial, "extrakey")
    entry = _table_entry(doc, min_rows=1)
    rows = _rows(folder, entry)
    rows[-1]["intruder"] = 1
    _rewrite_rows(folder, doc, entry, rows)
    _refused(rx, folder, entry["name"], f"line {len(rows)} has unexpected column(s) 'intruder'")


def test_a_partial_row_repeating_a_key_in_place_of_another_is_refused(rx):
    folder, doc = _tampered(rx, rx.partial, "repeatkey")
    entry = _table_entry(doc, min_rows=1)
    rows = _rows(folder, entry)
    key = entry["primary_key"][0]
    dropped = next(c["name"] for c in entry["columns"] if c["name"] != key)
    del rows[0][dropped]
    first = json.dumps(rows[0])[:-1] + f", {json.dumps(key)}: {json.dumps(rows[0][key])}}}"
    _without_media(folder, doc)
    content = b"".join((first if i == 0 else json.dumps(r)).encode() + b"\n" for i, r in enumerate(rows))
    _resign(folder, doc, entry, zstandard.ZstdCompressor().compress(content), rows=len(rows))
    _refused(rx, folder, entry["name"], f"line 1 lacks column(s) {dropped!r}; repeats column(s) {key!r}")


def test_rows_of_another_table_in_a_partial_file_are_refused(rx):
    folder, doc = _tampered(rx, rx.partial, "othertable")
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
    _refused(rx, folder, victim["name"], "line 1", "every row must have exactly the manifest's columns")


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
    folder, doc = _tampered(rx, rx.partial, "fifotable")
    _write_manifest(folder, doc)
    entry = _table_entry(doc)
    (folder / entry["name"]).unlink()
    os.mkfifo(folder / entry["name"])
    _refused(rx, folder, entry["name"], "is not a regular file")


def test_a_fifo_in_place_of_the_manifest_is_refused_without_blocking(rx, no_hang):
    folder, _ = _tampered(rx, rx.partial, "fifomanifest")
    (folder / MANIFEST_NAME).unlink()
    os.mkfifo(folder / MANIFEST_NAME)
    _refused(rx, folder, "manifest.json is not a regular file")


# -- the genuine backups still load ------------------------------------------------------------


def test_the_genuine_partial_still_loads_after_all_of_it(rx):
    folder = _copy(rx, rx.partial, rx.partial.name)
    received = receive(folder, dsn=rx.dsn, media_dir=rx.media, quarantine_dir=rx.quarantine)
    assert received.load.outcome == "loaded"
    with connect(rx.dsn) as conn:
        outcomes = dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())
    assert outcomes == {rx.complete.name: "loaded", rx.partial.name: "loaded"}
