"""Change capture's core on a real PostgreSQL with wal_level=logical (issue 18, first slice):
the slot's window reads, its advance, the change sets they fold into, and what is refused."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from arb_pipeline.capture import slot as slot_module
from arb_pipeline.capture.changes import DELETE, UPSERT, ChangeError, change_sets
from arb_pipeline.capture.pgoutput import UNCHANGED, Update, parse_lsn
from arb_pipeline.capture.slot import (
    CaptureError,
    advance,
    ensure_publication,
    ensure_slot,
    prerequisites,
    read_window,
    slot_status,
    status_of_row,
)
from arb_pipeline.catalog import current_catalog, introspect
from arb_pipeline.pg.connect import connect

P = current_catalog().prefix
BUS, EVENT, ASSIGN, EVBUS, REPORT, POSITION = (
    P + t for t in ("busv2", "event", "busassignment", "eventforbusv2", "report", "devicepositionintime")
)
PUBLICATION = "arb_capture"


@pytest.fixture
def capture(logical_sender_db):
    """(dsn, conn, slot, primary keys): the catalog's tables published, a fresh slot on them."""
    tables = current_catalog().table_names
    slot = f"arb_test_{uuid.uuid4().hex[:12]}"
    with connect(logical_sender_db, autocommit=True) as conn:
        assert ensure_publication(conn, PUBLICATION, tables) == list(tables)
        assert ensure_slot(conn, slot).created
        keys = {t: info.primary_key for t, info in introspect(conn, tables).items()}
        try:
            yield logical_sender_db, conn, slot, keys
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _commit(dsn: str, *statements: str, params=None) -> None:
    """One transaction of ``statements``, committed."""
    with connect(dsn) as conn:
        for stmt in statements:
            conn.execute(stmt, params)
        conn.commit()


def _later(conn):
    return conn.execute("SELECT clock_timestamp() + interval '1 hour'").fetchone()[0]


def _wal_lsn(conn) -> str:
    return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]


def _changes(conn, slot, keys):
    """The change sets of everything the slot holds now, read without moving it."""
    return change_sets(read_window(conn, slot, PUBLICATION, _later(conn)).transactions, keys)


def _bus(plate: str) -> str:
    return f'INSERT INTO "{BUS}" ("registrationPlate", uuid) VALUES (\'{plate}\', gen_random_uuid())'


def test_three_transactions_fold_into_change_sets_in_commit_order(capture):
    dsn, conn, slot, keys = capture
    wal = [_wal_lsn(conn)]  # the WAL position before and after each transaction
    _commit(dsn, _bus("AA1111"), _bus("BB2222"))
    wal.append(_wal_lsn(conn))
    ids = [r[0] for r in conn.execute(f'SELECT id FROM "{BUS}" ORDER BY id')]
    _commit(dsn, f'UPDATE "{BUS}" SET "registrationPlate" = \'AA9999\' WHERE id = {ids[0]}', _bus("CC3333"))
    wal.append(_wal_lsn(conn))
    _commit(dsn, f'DELETE FROM "{BUS}" WHERE id = {ids[1]}')
    wal.append(_wal_lsn(conn))

    window = read_window(conn, slot, PUBLICATION, _later(conn))
    txns = window.transactions
    assert len(txns) == 3 and window.transaction_count == 3 and not window.reached_end
    for txn, before, after in zip(txns, wal[:-1], wal[1:], strict=True):  # each commit is where it was made
        assert parse_lsn(before) < txn.commit_lsn < txn.end_lsn <= parse_lsn(after)
    assert [len(t.changes) for t in txns] == [2, 2, 1]
    assert window.advance_to >= txns[-1].end_lsn

    sets = change_sets(txns, keys)
    assert list(sets) == [BUS]
    buses = sets[BUS]
    third = str(ids[1] + 1)
    # commit order: bus 1 and the new bus (second transaction), then bus 2's delete (third)
    assert list(buses.rows) == [(str(ids[0]),), (third,), (str(ids[1]),)]
    first = buses.rows[(str(ids[0]),)]
    assert first.op == UPSERT and first.values["registrationPlate"] == "AA9999"
    assert set(first.values) == {"id", "registrationPlate", "uuid"}
    assert (first.commit_lsn, first.commit_time) == (txns[1].commit_lsn, txns[1].commit_time)
    gone = buses.rows[(str(ids[1]),)]
    assert gone.op == DELETE and gone.values is None and gone.commit_lsn == txns[2].commit_lsn
    assert [c.key for c in buses.deletes] == [(str(ids[1]),)]

    # a peek moves nothing: the same read again gives the same transactions (exactly-once base)
    assert read_window(conn, slot, PUBLICATION, _later(conn)).transactions == txns


def test_window_excludes_a_later_commit_which_the_next_read_gets(capture):
    dsn, conn, slot, _ = capture
    _commit(dsn, _bus("EARLY1"))
    end = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    _commit(dsn, _bus("LATE22"))

    first = read_window(conn, slot, PUBLICATION, end, chunk_changes=1)  # several peeks
    assert first.reached_end and first.transaction_count == 1
    (early,) = first.transactions
    assert early.commit_time < end and first.advance_to == early.end_lsn
    assert read_window(conn, slot, PUBLICATION, end) == first  # repeatable until advanced

    assert advance(conn, slot, first.advance_to) == first.advance_to
    second = read_window(conn, slot, PUBLICATION, end + timedelta(hours=1))
    (late,) = second.transactions
    assert late.commit_time >= end and late.commit_lsn > early.commit_lsn
    assert second.start_lsn == first.advance_to
    assert late.changes[0].message.new[1] == "LATE22"


def test_advance_refuses_to_move_backwards(capture):
    dsn, conn, slot, _ = capture
    _commit(dsn, _bus("ONE111"))
    window = read_window(conn, slot, PUBLICATION, _later(conn))
    advance(conn, slot, window.advance_to)
    with pytest.raises(CaptureError, match="backwards"):
        advance(conn, slot, window.start_lsn)
    assert advance(conn, slot, window.advance_to) == window.advance_to  # same place: nothing to do
    assert read_window(conn, slot, PUBLICATION, _later(conn)).transaction_count == 0


def _bus_events(dsn: str, n: int) -> None:
    _commit(
        dsn,
        f"INSERT INTO \"{EVENT}\" VALUES ('evn1', 'broken bus', NULL, 30, 'bus', 'o', 'bus')",
        _bus("EV1111"),
        f'INSERT INTO "{ASSIGN}" (service, uuid_id) SELECT \'506\', max(id) FROM "{BUS}"',
        f'INSERT INTO "{EVBUS}" ("timeStamp", "timeCreation", event_id, "eventConfirm", "eventDecline", '
        f"\"phoneId\", busassignment_id) SELECT now() - interval '1 day', now(), 'evn1', 1, 1 + g % 2, "
        f'gen_random_uuid(), (SELECT max(id) FROM "{ASSIGN}") FROM generate_series(1, {n}) g',
    )


def test_a_bulk_update_that_leaves_timestamp_alone_is_captured(capture):
    dsn, conn, slot, keys = capture
    _bus_events(dsn, 4)
    advance(conn, slot, read_window(conn, slot, PUBLICATION, _later(conn)).advance_to)
    stamps = dict(conn.execute(f'SELECT id::text, "timeStamp"::text FROM "{EVBUS}"').fetchall())

    # the app's "mark declined events broken": no cursor column moves, so timestamp windows miss it
    _commit(dsn, f'UPDATE "{EVBUS}" SET broken = true WHERE "eventDecline" > "eventConfirm"')
    broken = _changes(conn, slot, keys)[EVBUS].upserts
    assert len(broken) == 2 and {c.values["broken"] for c in broken} == {"t"}
    for c in broken:
        same = "SELECT %s::timestamptz = %s::timestamptz"
        assert conn.execute(same, (c.values["timeStamp"], stamps[c.key[0]])).fetchone()[0]


def test_a_truncate_is_refused(capture):
    dsn, conn, slot, keys = capture
    _commit(dsn, f'TRUNCATE "{POSITION}"')
    window = read_window(conn, slot, PUBLICATION, _later(conn))
    with pytest.raises(ChangeError, match=f"TRUNCATE of {POSITION}.*complete"):
        change_sets(window.transactions, keys)


BIG = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)"  # 12.8 kB, stored out of line


def test_an_unchanged_toast_value_is_resolved_or_refused_never_null(capture):
    dsn, conn, slot, keys = capture
    insert = (
        f'INSERT INTO "{REPORT}" ("timeStamp", message, "reportInfo", "phoneId") '
        f"VALUES (now(), {BIG}, 'first', gen_random_uuid())"
    )
    update = f'UPDATE "{REPORT}" SET "reportInfo" = %s'
    _commit(dsn, insert)
    big = conn.execute(f'SELECT message FROM "{REPORT}"').fetchone()[0]
    _commit(dsn, update, params=("second",))
    # inserted and updated in one window: the insert carried the value whole
    (row,) = _changes(conn, slot, keys)[REPORT].upserts
    assert row.values["message"] == big and row.values["reportInfo"] == "second"
    advance(conn, slot, read_window(conn, slot, PUBLICATION, _later(conn)).advance_to)

    _commit(dsn, update, params=("third",))
    window = read_window(conn, slot, PUBLICATION, _later(conn))
    message = window.transactions[0].changes[0].message
    assert isinstance(message, Update) and UNCHANGED in message.new  # surfaced, not turned into NULL
    with pytest.raises(ChangeError, match=f"table {REPORT}, column message: .*REPLICA IDENTITY FULL"):
        change_sets(window.transactions, keys)
    advance(conn, slot, window.advance_to)

    # a new key: the old key comes along ('K'), its other columns NULL, which must not fill the value
    _commit(dsn, f'UPDATE "{REPORT}" SET id = id + 100')
    window = read_window(conn, slot, PUBLICATION, _later(conn))
    assert window.transactions[0].changes[0].message.old_kind == "K"
    with pytest.raises(ChangeError, match=f"table {REPORT}, column message: "):
        change_sets(window.transactions, keys)
    advance(conn, slot, window.advance_to)

    conn.execute(f'ALTER TABLE "{REPORT}" REPLICA IDENTITY FULL')
    _commit(dsn, update, params=("fourth",))
    (row,) = _changes(conn, slot, keys)[REPORT].upserts
    assert row.values["message"] == big and row.values["reportInfo"] == "fourth"


def test_slot_status_shows_lag_growing_with_unread_wal(capture):
    dsn, conn, slot, _ = capture
    before = slot_status(conn, slot)
    assert before.exists and not before.active and before.wal_status == "reserved"
    assert before.max_slot_wal_keep_size_bytes is None  # -1 on this cluster
    _commit(
        dsn,
        f'INSERT INTO "{POSITION}" (longitude, latitude, "timeStamp", "phoneId") '
        "SELECT g, g, now(), gen_random_uuid() FROM generate_series(1, 5000) g",
    )
    after = slot_status(conn, slot)
    assert after.lag_bytes > before.lag_bytes + 100_000
    assert after.retained_wal_bytes >= after.lag_bytes
    assert after.confirmed_flush_lsn == before.confirmed_flush_lsn

    assert not slot_status(conn, "arb_no_such_slot").exists


def _wait_for_setting(conn, name: str, value: str) -> None:
    deadline = time.monotonic() + 10
    while conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.05)


def test_a_slot_past_max_slot_wal_keep_size_is_lost_and_refuses_reads(capture):
    dsn, conn, slot, _ = capture
    # ALTER SYSTEM: this cluster's setting for the test's length (slots are cluster-wide)
    conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    conn.execute("SELECT pg_reload_conf()")
    try:
        _wait_for_setting(conn, "max_slot_wal_keep_size", "1MB")  # a reload reaches each process later
        for _ in range(4):  # new WAL segments, each past the slot's restart position
            _commit(dsn, _bus("WAL111"))
            conn.execute("SELECT pg_switch_wal()")
        conn.execute("CHECKPOINT")  # the checkpoint removes the old segments and invalidates the slot
        status = slot_status(conn, slot)
        assert status.lost and status.restart_lsn is None, status
        assert status.max_slot_wal_keep_size_bytes == 1 << 20
        assert "is lost" in status.problems[0]
        with pytest.raises(CaptureError, match="is lost.*take a complete"):
            read_window(conn, slot, PUBLICATION, _later(conn))
        with pytest.raises(CaptureError, match="is lost"):
            advance(conn, slot, 1 << 40)
    finally:
        conn.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        conn.execute("SELECT pg_reload_conf()")


def test_a_lost_slot_row_reads_as_lost():
    # Forcing 'lost' takes WAL past max_slot_wal_keep_size and a checkpoint; the row is read here.
    status = status_of_row("s", (False, "lost", "0/3000060", None, 12345, None, 1024))
    assert status.lost and status.restart_lsn is None and status.retained_wal_bytes is None
    assert status.max_slot_wal_keep_size_bytes == 1024 << 20
    assert "lost" in status.problems[0] and "complete" in status.problems[0]


def test_prerequisites_name_wal_level_a_missing_key_and_the_replication_right(sender_db, logical_sender_db):
    tables = current_catalog().table_names
    with connect(sender_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE keyless (x int)")
        problems = prerequisites(conn, [*tables, "keyless"])
    assert any(
        "wal_level is 'replica'" in p and "ALTER SYSTEM SET wal_level = logical" in p for p in problems
    )
    assert any(p.startswith("table keyless has no primary key") for p in problems)
    assert not any(t in p for p in problems for t in tables)

    with connect(logical_sender_db, autocommit=True) as conn:
        role = f"reader_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with connect(logical_sender_db.replace("user=postgres", f"user={role}"), autocommit=True) as conn:
            problems = prerequisites(conn, tables)
        assert len(problems) == 2, problems
        assert "max_slot_wal_keep_size is -1" in problems[0]
        assert f"role {role} has no REPLICATION right" in problems[1]
    finally:
        with connect(logical_sender_db, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def test_publication_and_slot_are_idempotent(capture):
    _, conn, slot, _ = capture
    tables = current_catalog().table_names
    assert ensure_publication(conn, PUBLICATION, tables) == []
    conn.execute(f'ALTER PUBLICATION {PUBLICATION} DROP TABLE "{BUS}"')
    assert ensure_publication(conn, PUBLICATION, tables) == [BUS]
    again = ensure_slot(conn, slot)
    assert not again.created and again.position == slot_status(conn, slot).confirmed_flush_lsn


def test_wal_of_unpublished_tables_does_not_stay_behind_the_slot(capture):
    dsn, conn, slot, _ = capture
    conn.execute("CREATE TABLE scratch (x int PRIMARY KEY)")  # not in the publication
    _commit(dsn, "INSERT INTO scratch SELECT g FROM generate_series(1, 5000) g")
    lag = slot_status(conn, slot).lag_bytes
    window = read_window(conn, slot, PUBLICATION, _later(conn))
    assert window.transaction_count == 0 and not window.reached_end
    assert window.advance_to > window.start_lsn  # read to the flushed WAL: nothing in it to ship
    advance(conn, slot, window.advance_to)
    assert slot_status(conn, slot).lag_bytes < lag


def test_a_consumer_takes_transactions_one_at_a_time_and_a_key_change_deletes_the_old_key(capture):
    dsn, conn, slot, keys = capture
    _commit(dsn, _bus("KEY111"))
    (old_id,) = conn.execute(f'SELECT id FROM "{BUS}"').fetchone()
    _commit(dsn, f'UPDATE "{BUS}" SET id = id + 1000')
    taken = []
    window = read_window(conn, slot, PUBLICATION, _later(conn), consume=taken.append)
    assert window.transactions == () and window.transaction_count == len(taken) == 2
    rows = change_sets(taken, keys)[BUS].rows
    assert [(k, c.op) for k, c in rows.items()] == [((str(old_id),), DELETE), ((str(old_id + 1000),), UPSERT)]


@pytest.mark.parametrize("copy", [True, False], ids=["from a copy", "peeked, no slot free"])
def test_batched_reads_take_the_same_whole_transactions_as_one_read(capture, monkeypatch, copy):
    """Batches that each stop after one transaction, and client fetches of two messages that
    end inside transactions, give what one large read gives: whole transactions in commit order."""
    dsn, conn, slot, _ = capture
    made = []
    copy_of = slot_module.reading_copy if copy else (lambda conn, slot: None)
    monkeypatch.setattr(
        slot_module, "reading_copy", lambda conn, slot: made.append(copy_of(conn, slot)) or made[-1]
    )
    _commit(dsn, _bus("BAT111"), _bus("BAT222"), _bus("BAT333"))  # B, R, I, I, I, C
    _commit(dsn, _bus("BAT444"))
    _commit(dsn, f'UPDATE "{BUS}" SET "registrationPlate" = lower("registrationPlate")')
    end = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    _commit(dsn, _bus("LATE33"))  # past the window: closes it

    whole = read_window(conn, slot, PUBLICATION, end)
    assert whole.reached_end and [len(t.changes) for t in whole.transactions] == [3, 1, 4]
    monkeypatch.setattr(slot_module, "FETCH_ROWS", 2)
    batched = read_window(conn, slot, PUBLICATION, end, chunk_changes=1)  # one transaction a peek
    assert batched == whole
    consumed = []
    window = read_window(conn, slot, PUBLICATION, end, chunk_changes=3, consume=consumed.append)
    assert tuple(consumed) == whole.transactions and window.advance_to == whole.advance_to
    assert len(made) == 3 and all(made) == copy  # every read from a copy, or every one peeked


def test_a_window_larger_than_one_peek_folds_like_one_read(capture):
    dsn, conn, slot, keys = capture
    for i in range(12):  # a transaction larger than the first peek's limit, then small ones
        rows = 40 if i == 0 else 1
        _commit(dsn, *(_bus(f"W{i:02d}{n:03d}") for n in range(rows)))
    _commit(dsn, f'DELETE FROM "{BUS}" WHERE "registrationPlate" LIKE %s', params=("W00%",))
    later = _later(conn)
    small = read_window(conn, slot, PUBLICATION, later, chunk_changes=5)
    assert small.transaction_count == 13 and not small.reached_end
    assert small == read_window(conn, slot, PUBLICATION, later)
    buses = change_sets(small.transactions, keys)[BUS]
    assert len(buses.upserts) == 11 and len(buses.deletes) == 40


def _slots(conn):
    return conn.execute("SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots").fetchall()


def test_a_read_moves_no_slot_and_leaves_no_copy_even_when_its_consumer_fails(capture):
    dsn, conn, slot, _ = capture
    _commit(dsn, _bus("COPY11"))
    _commit(dsn, _bus("COPY22"))
    before = _slots(conn)
    assert read_window(conn, slot, PUBLICATION, _later(conn), chunk_changes=1).transaction_count == 2
    assert _slots(conn) == before

    def refuse(txn):
        raise ChangeError("a consumer refused")

    with pytest.raises(ChangeError, match="refused"):
        read_window(conn, slot, PUBLICATION, _later(conn), consume=refuse)
    assert _slots(conn) == before
