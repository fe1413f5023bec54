"""Captured partials end to end (issue 18, second slice): built from the slot on a real
wal_level=logical sender, applied on a real receiver, interleaved with pinned completes."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest

from arb_pipeline.capture.changes import ChangeError
from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.slot import CaptureError, advance, ensure_publication, ensure_slot, slot_status
from arb_pipeline.catalog import current_catalog
from arb_pipeline.extract.captured import (
    CaptureSource,
    copy_text_field,
    copy_text_line,
    publish_and_advance,
)
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.captured_checks import check_captured_partial
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import Manifest
from arb_pipeline.package.schema_check import check_schema
from arb_pipeline.package.verify import verify_files
from arb_pipeline.pg.connect import connect
from arb_pipeline.transport.base import TransportError
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.backups import P, load, new_sender, wide_window
from arb_pipeline_tests.support.capture import captured_partial
from arb_pipeline_tests.support.postgres import fresh_db
from arb_pipeline_tests.support.traffic import traffic

PUBLICATION = "arb_capture"
TOKEN, POSITION, POSE = P + "activetoken", P + "devicepositionintime", P + "poseintrajectoryoftoken"


@pytest.fixture
def world(logical_pg_cluster, tmp_path):
    """(dsn, media, staging, source, workload): a seeded sender with the catalog published and
    a fresh slot, and the app's traffic on it."""
    from arb_pipeline.dev.generator.workload import Workload

    dsn, media, staging = new_sender(logical_pg_cluster, tmp_path, seed=5)
    source = CaptureSource(f"arb_test_{uuid.uuid4().hex[:12]}", PUBLICATION)
    with connect(dsn, autocommit=True) as conn:
        ensure_publication(conn, PUBLICATION, current_catalog().table_names)
        ensure_slot(conn, source.slot)
    try:
        with Workload(dsn, media, seed=5) as work:
            yield dsn, media, staging, source, work
    finally:
        with connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (source.slot,))


def _captured(dsn, media, staging, source, expect_from_lsn=None):
    return captured_partial(dsn, staging, media, source, expect_from_lsn=expect_from_lsn)


def _advance(dsn, built):
    with connect(dsn, autocommit=True) as conn:
        advance(conn, built.manifest.capture.slot, parse_lsn(built.manifest.capture.to_lsn))


def _pinned_complete(dsn, staging, media):
    from arb_pipeline.dev.postgres import find_bin_dir
    from arb_pipeline.extract.build import build_complete
    from arb_pipeline_tests.support.backups import _unique

    yesterday = wide_window().start.replace(hour=0, minute=0) - timedelta(days=1)
    return build_complete(
        dsn,
        staging,
        partition_key=yesterday.strftime("%Y-%m-%d"),
        window=Window(yesterday, yesterday + timedelta(days=1)),
        unique=f"{next(_unique):08d}",
        media_dir=media,
        sender_id="test-sender",
        pg_dump=str(find_bin_dir() / "pg_dump"),
        pin_to_slot=True,
    )


def _silent_changes(dsn, work):
    """A bulk update that leaves timeStamp alone, purged active tokens, new telemetry."""
    broken = work.mark_declined_broken()
    with connect(dsn) as conn:
        purged = conn.execute(f'DELETE FROM "{TOKEN}" WHERE id % 2 = 0').rowcount
        conn.commit()
    for _ in range(20):
        work.execute(work.draw())  # trips (poses) and device positions among them
    return broken, purged


def _settled(receiver, built, result):
    checks = check_captured_partial(receiver, built.staged.root, built.manifest, result)
    assert checks and all(c.passed for c in checks.values()), [c.description for c in checks.values()]


def _parity(dsn, receiver, label=""):
    report = compare_tables(dsn, receiver)  # every replicated table
    drift = [(t.table, t.counts, [d.to_dict() for d in t.diffs[:3]]) for t in report.tables if not t.ok]
    assert report.ok, (label, drift)
    return report


def test_copy_text_escapes_what_copy_would_unescape():
    assert copy_text_field(None) == "\\N"
    assert copy_text_field("a\\b\tc\nd\re") == "a\\\\b\\tc\\nd\\re"
    assert copy_text_field("\\N") == "\\\\N"  # the text, not NULL


@pytest.mark.parametrize(
    "values",
    [("1", "-70.5", "x y"), ("a\tb", "c"), ("a\\b", None), (None,), ("\\N",), ("line\nbreak", "cr\r")],
)
def test_a_captured_line_escapes_each_value_as_copy_text_field_does(values):
    assert copy_text_line(values, "0/16B3748") == "\t".join([*map(copy_text_field, values), "0/16B3748"])


def test_escaped_values_copy_back_exactly(receiver_db):
    values = ["a\\b\tc\nd\re", "\\N", None, "ñ 10\\"]
    line = "\t".join(map(copy_text_field, values)) + "\n"
    with connect(receiver_db) as conn:
        conn.execute("CREATE TEMP TABLE x (a text, b text, c text, d text)")
        with conn.cursor().copy("COPY x FROM STDIN") as copy:
            copy.write(line.encode())
        assert list(conn.execute("SELECT * FROM x").fetchone()) == values


def test_captured_partial_brings_every_table_to_parity_without_a_complete(world, receiver_db):
    dsn, media, staging, source, work = world
    traffic(work, 80)
    complete = _pinned_complete(dsn, staging, media)
    assert complete.manifest.capture_lsn
    assert load(receiver_db, complete).outcome == "loaded"
    _parity(dsn, receiver_db)

    traffic(work, 150)
    broken, purged = _silent_changes(dsn, work)
    assert purged > 0
    built = _captured(dsn, media, staging, source)
    m = built.manifest
    assert m.source == "capture" and m.capture.transactions > 0
    assert Manifest.from_json(m.to_json()) == m  # the strict parser takes what we write
    assert any(f.kind == "deletes" and f.table == TOKEN for f in m.files)
    tables = {f.table for f in m.table_files()}
    assert {POSITION, POSE} <= tables
    assert verify_files(built.staged.root) == m  # sizes, sha256 and row counts, deletes included
    with connect(receiver_db) as conn:
        plan = check_schema(m, conn)
    assert not plan.ignored  # the commit LSN is the load's version, not a missing column
    result = load(receiver_db, built)
    assert result.outcome == "loaded" and result.rows_written > 0 and result.rows_deleted > 0
    _parity(dsn, receiver_db)
    _settled(receiver_db, built, result)
    assert load(receiver_db, built).outcome == "already loaded"
    with connect(receiver_db) as conn:
        ledger = conn.execute(
            "SELECT capture_lsn::text FROM arb_loaded_backup WHERE backup_id = %s", (m.backup_id,)
        ).fetchone()[0]
    assert ledger == m.capture.to_lsn
    with connect(receiver_db) as conn:  # a captured row lost on the receiver: the check names its table
        conn.execute(f'DELETE FROM "{POSITION}" WHERE id = (SELECT max(id) FROM "{POSITION}")')
        conn.commit()
    checks = check_captured_partial(receiver_db, built.staged.root, m, result)
    assert [t for t, c in checks.items() if not c.passed] == [POSITION]


def test_crash_before_advance_rebuilds_the_same_changes_and_loads_once(world, receiver_db):
    dsn, media, staging, source, work = world
    complete = _pinned_complete(dsn, staging, media)
    load(receiver_db, complete)
    traffic(work, 100)
    _silent_changes(dsn, work)
    first = _captured(dsn, media, staging, source)  # published, then "killed" before the advance
    again = _captured(dsn, media, staging, source, expect_from_lsn=first.manifest.capture.from_lsn)
    assert again.manifest.capture == first.manifest.capture
    for a, b in zip(first.manifest.files, again.manifest.files, strict=True):
        assert (a.name, a.sha256) == (b.name, b.sha256)
    load(receiver_db, first)
    second = load(receiver_db, again)
    assert second.outcome == "loaded" and second.rows_deleted == 0
    _parity(dsn, receiver_db)

    class Killed(LocalFolderTransport):  # dies before the manifest is published
        def publish(self, local_path, remote_name):
            if remote_name.endswith("manifest.json"):
                raise TransportError("killed")
            super().publish(local_path, remote_name)

    inbox = staging.parent / "inbox"
    with pytest.raises(TransportError):
        publish_and_advance(Killed(inbox), again, dsn)
    with connect(dsn, autocommit=True) as conn:  # not advanced: the changes are still there
        assert slot_status(conn, source.slot).confirmed_flush_lsn == parse_lsn(
            again.manifest.capture.from_lsn
        )
    moved = publish_and_advance(LocalFolderTransport(inbox), again, dsn)
    assert moved >= parse_lsn(again.manifest.capture.to_lsn)
    assert (inbox / again.remote_dir / "manifest.json").exists()
    with pytest.raises(CaptureError, match="moved past them"):
        _captured(dsn, media, staging, source, expect_from_lsn=first.manifest.capture.from_lsn)


def _traffic_meanwhile(dsn, media, stop: threading.Event) -> None:
    """The app's requests committing, in their own session, until ``stop``."""
    from arb_pipeline.dev.generator.workload import Workload

    with Workload(dsn, media, seed=11) as other:
        while not stop.is_set():
            other.step()


def test_partials_around_a_complete_interleave_in_either_order(world, pg_cluster):
    dsn, media, staging, source, work = world
    base = _pinned_complete(dsn, staging, media)
    traffic(work, 80)
    _silent_changes(dsn, work)
    # Transactions commit while the complete is taken: those before its pin are in it, the
    # rest only in the partials; the partial before straddles the pin.
    stop = threading.Event()
    meanwhile = threading.Thread(target=_traffic_meanwhile, args=(dsn, media, stop))
    meanwhile.start()
    try:
        traffic(work, 20)
        complete = _pinned_complete(dsn, staging, media)
        traffic(work, 20)
    finally:
        stop.set()
        meanwhile.join()
    before = _captured(dsn, media, staging, source)  # everything up to now: straddles the pin
    _advance(dsn, before)
    traffic(work, 80)
    _silent_changes(dsn, work)
    after = _captured(dsn, media, staging, source)
    orders = (
        (base, before, complete, after),
        (base, after, complete, before),
        (base, complete, after, before),
        (base, after, before, complete),
    )
    for order in orders:
        receiver = fresh_db(pg_cluster, "receiver")
        results = [(backup, load(receiver, backup)) for backup in order]
        assert {r.outcome for _, r in results} <= {"loaded", "superseded"}
        _parity(dsn, receiver, [b.manifest.backup_id for b in order])
        for backup, result in results:  # every change settled, whichever order it came in
            if backup.manifest.source == "capture":
                _settled(receiver, backup, result)


def test_truncate_in_the_window_is_refused_naming_the_table(world):
    dsn, media, staging, source, work = world
    with connect(dsn) as conn:
        conn.execute(f'TRUNCATE "{TOKEN}"')
        conn.commit()
    with pytest.raises(ChangeError, match=f"TRUNCATE of {TOKEN}"):
        _captured(dsn, media, staging, source)


def test_captured_deletes_follow_the_catalog_delete_policy(world, receiver_db):
    """A receiver's own row (no backup wrote it) stays in a shipped-only table and goes in a
    mirror table when the sender deletes a row of that key."""
    dsn, media, staging, source, work = world
    traffic(work, 60)
    with connect(dsn) as conn:  # a trip that ended: a token without its active token (token_id is unique)
        token = conn.execute(
            f'DELETE FROM "{TOKEN}" WHERE id = (SELECT min(id) FROM "{TOKEN}") RETURNING token_id'
        ).fetchone()[0]
        conn.commit()
    load(receiver_db, _pinned_complete(dsn, staging, media))
    position = f'INSERT INTO "{POSITION}" VALUES (900000, -70.6, -33.4, now(), gen_random_uuid())'
    active = f'INSERT INTO "{TOKEN}" (id, "timeStamp", token_id) VALUES (900000, now(), {token})'
    with connect(receiver_db) as conn:  # history only the receiver has
        conn.execute(position)
        conn.execute(active)
        conn.commit()
    with connect(dsn) as conn:  # the sender writes and deletes rows of the same keys
        conn.execute(position)
        conn.execute(active)
        conn.commit()
        conn.execute(f'DELETE FROM "{POSITION}" WHERE id = 900000')
        conn.execute(f'DELETE FROM "{TOKEN}" WHERE id = 900000')
        conn.commit()
    built = _captured(dsn, media, staging, source)
    assert {f.table for f in built.manifest.delete_files()} >= {POSITION, TOKEN}
    load(receiver_db, built)
    with connect(receiver_db) as conn:
        kept = conn.execute(f'SELECT count(*) FROM "{POSITION}" WHERE id = 900000').fetchone()[0]
        mirrored = conn.execute(f'SELECT count(*) FROM "{TOKEN}" WHERE id = 900000').fetchone()[0]
    assert (kept, mirrored) == (1, 0)
