"""Loads into a real receiver: idempotent, order-independent, all or nothing."""

from __future__ import annotations

import pytest

from arb_pipeline.load.staging import MalformedFileError
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import (
    PARTIAL_TABLES,
    P,
    complete_for_yesterday,
    load,
    make_partial,
    seeded_sender,
)
from arb_pipeline_tests.support.postgres import fresh_db
from arb_pipeline_tests.support.traffic import traffic


@pytest.fixture
def sender(sender_db, tmp_path):
    with seeded_sender(sender_db, tmp_path, seed=3) as world:
        yield world


def _traffic(work, n=120):
    traffic(work, n)


def _count(dsn, table, where="true"):
    with connect(dsn) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}" WHERE {where}').fetchone()[0]


def test_partial_load_applies_rows_and_twice_is_a_noop(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    backup = make_partial(dsn, tmp_path / "s", media)
    first = load(receiver_db, backup)
    assert first.outcome == "loaded" and first.rows_written == first.rows_in_backup > 0
    assert compare_tables(dsn, receiver_db, tables=PARTIAL_TABLES).ok
    again = load(receiver_db, backup)
    assert again.outcome == "already loaded" and again.rows_written == 0
    with connect(receiver_db) as conn:
        assert conn.execute("SELECT count(*) FROM arb_loaded_backup").fetchone()[0] == 1


def test_out_of_order_partials_end_in_the_in_order_state(sender, pg_cluster, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    older = make_partial(dsn, tmp_path / "s", media)
    _traffic(work)  # votes update events of the first batch: newer versions of the same rows
    newer = make_partial(dsn, tmp_path / "s", media)
    in_order, reversed_ = fresh_db(pg_cluster, "receiver"), fresh_db(pg_cluster, "receiver")
    load(in_order, older), load(in_order, newer)
    load(reversed_, newer)
    late = load(reversed_, older)
    assert late.outcome == "loaded"
    assert compare_tables(in_order, reversed_).ok
    assert compare_tables(dsn, reversed_, tables=PARTIAL_TABLES).ok  # the newest versions won


def test_a_complete_after_newer_partials_keeps_them(sender, pg_cluster, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    _traffic(work)
    partial = make_partial(dsn, tmp_path / "s", media)
    a, b = fresh_db(pg_cluster, "receiver"), fresh_db(pg_cluster, "receiver")
    load(a, complete), load(a, partial)
    load(b, partial)
    assert load(b, complete).outcome == "loaded"
    assert compare_tables(a, b).ok
    assert compare_tables(dsn, b, tables=PARTIAL_TABLES).ok


def test_complete_applies_deletes_and_bulk_updates_then_supersedes_older_partials(
    sender, receiver_db, tmp_path
):
    dsn, media, work = sender
    _traffic(work, 200)
    old_partial = make_partial(dsn, tmp_path / "s", media)
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    with connect(dsn) as conn:  # changes no timestamp sees: deletes and a bulk update
        conn.execute(f'DELETE FROM "{P}activetoken"')
        conn.execute(f'UPDATE "{P}eventforbusv2" SET broken = true, "brokenType" = \'test\'')
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    result = load(receiver_db, complete)
    assert result.rows_deleted > 0
    assert compare_tables(dsn, receiver_db).ok
    late = load(receiver_db, old_partial)  # older than the complete: must not resurrect anything
    assert late.outcome == "superseded"
    assert compare_tables(dsn, receiver_db).ok


def test_receiver_only_columns_survive_and_changed_rows_are_marked(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    load(receiver_db, make_partial(dsn, tmp_path / "s", media))
    with connect(receiver_db) as conn:
        conn.execute(f"UPDATE \"{P}eventforbusv2\" SET transformed = true, direction = 'I'")
    with connect(dsn) as conn:
        changed = conn.execute(
            f'UPDATE "{P}eventforbusv2" SET "eventConfirm" = "eventConfirm" + 1, '
            f'"timeStamp" = "timeStamp" + interval \'1 second\' '
            f'WHERE id = (SELECT min(id) FROM "{P}eventforbusv2") RETURNING id'
        ).fetchone()[0]
    marks = _marks(receiver_db)
    load(receiver_db, make_partial(dsn, tmp_path / "s", media))
    assert _count(receiver_db, P + "eventforbusv2", "direction = 'I'") == _count(
        receiver_db, P + "eventforbusv2"
    )
    assert _count(receiver_db, P + "eventforbusv2", "NOT transformed") == 1
    assert _count(receiver_db, P + "eventforbusv2", f"NOT transformed AND id = {changed}") == 1
    # Postprocessing's marker moves on the changed row only (the partial carried them all).
    after = _marks(receiver_db)
    assert {i for i in marks if after[i] != marks[i]} == {changed}
    assert after[changed] > marks[changed]
    load(
        receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media)
    )  # a complete of the same content: nothing moves
    assert _marks(receiver_db) == after


def _marks(dsn):
    with connect(dsn) as conn:
        return dict(conn.execute(f'SELECT id, arb_changed_at FROM "{P}eventforbusv2"').fetchall())


def test_sequences_end_past_the_loaded_ids(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    load(receiver_db, make_partial(dsn, tmp_path / "s", media))
    with connect(receiver_db) as conn:
        top = conn.execute(f'SELECT max(id) FROM "{P}report"').fetchone()[0]
        nxt = conn.execute(f"""SELECT nextval(pg_get_serial_sequence('"{P}report"', 'id'))""").fetchone()[0]
    assert top is not None and nxt > top


def test_a_failing_load_changes_nothing(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    backup = make_partial(dsn, tmp_path / "s", media)
    # Corrupt the last table's file after the manifest was written: the load stages the
    # first tables, then fails; the transaction leaves no row and no ledger entry behind.
    last = backup.manifest.table_files()[-1]
    path = backup.staged.path(last.name)
    import zstandard

    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"id": "not a number"}\n' * (last.rows or 1)))
    with pytest.raises(MalformedFileError):
        load(receiver_db, backup)
    with connect(receiver_db) as conn:
        assert conn.execute("SELECT count(*) FROM arb_loaded_backup").fetchone()[0] == 0
    for table in PARTIAL_TABLES + [P + "busv2", P + "event"]:
        assert _count(receiver_db, table) == 0


def test_a_complete_into_a_populated_receiver_merges_only_what_it_changes(sender, receiver_db, tmp_path):
    """The staging sessions narrow each staged table to the rows the MERGE acts on
    (load/merge.py): a changed row, a new row and a row no backup wrote are written; a row
    a newer partial wrote and every unchanged row are not touched (same row version)."""
    dsn, media, work = sender
    _traffic(work)
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    events = P + "eventforbusv2"
    with connect(receiver_db) as conn:
        ids = [r[0] for r in conn.execute(f'SELECT id FROM "{events}" ORDER BY id LIMIT 3').fetchall()]
        changed, newer, adopted = ids
        conn.execute(  # as a partial newer than the next complete left it
            f'UPDATE "{events}" SET "eventConfirm" = 999, arb_synced_at = now() + interval \'1 day\' '
            "WHERE id = %s",
            (newer,),
        )
        conn.execute(f'UPDATE "{events}" SET arb_synced_at = NULL WHERE id = %s', (adopted,))
    with connect(dsn) as conn:
        conn.execute(
            f'UPDATE "{events}" SET "eventConfirm" = "eventConfirm" + 1 WHERE id IN (%s, %s)', ids[:2]
        )
        conn.execute(f'CREATE TEMP TABLE x AS SELECT * FROM "{events}" WHERE id = %s', (changed,))
        added = conn.execute(
            f'UPDATE x SET id = (SELECT max(id) + 1 FROM "{events}") RETURNING id'
        ).fetchone()[0]
        conn.execute(f'INSERT INTO "{events}" SELECT * FROM x')
    before = _versions(receiver_db, events)
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    result = load(receiver_db, complete)
    row = next(t for t in result.tables if t.table == events)
    assert row.changes is not None and "narrow" in row.seconds
    # Compared row by row: the key ranges of the 4 rows that differ (the newer partial's
    # too); every other range agreed on its count and summed row hash (load/key_ranges.py).
    assert row.rows_compared == 4
    assert row.rows_written == 3
    after = _versions(receiver_db, events)
    assert {i for i in after if after[i] != before.get(i)} == {changed, adopted, added}
    with connect(receiver_db) as conn:
        confirm = dict(
            conn.execute(f'SELECT id, "eventConfirm" FROM "{events}" WHERE id IN (%s, %s)', ids[:2])
        )
        synced = conn.execute(f'SELECT arb_synced_at FROM "{events}" WHERE id = %s', (adopted,)).fetchone()[0]
    assert confirm[newer] == 999  # the newer partial's row stays as it wrote it
    with connect(dsn) as conn:
        assert (
            confirm[changed]
            == conn.execute(f'SELECT "eventConfirm" FROM "{events}" WHERE id = %s', (changed,)).fetchone()[0]
        )
    assert synced == complete.manifest.snapshot_time  # claimed: the sender's from now on


def _versions(dsn, table):
    """Each row's row version (xmin): it changes exactly when the row is written."""
    with connect(dsn) as conn:
        return dict(conn.execute(f'SELECT id, xmin::text FROM "{table}"').fetchall())
