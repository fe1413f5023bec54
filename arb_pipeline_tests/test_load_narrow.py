"""Narrowing a complete's staged rows by key range (load/narrow.py, load/key_ranges.py)
on a real receiver: what agrees is left out, what differs is compared row by row, and
the result is the same as comparing everything."""

from __future__ import annotations

import pytest
from psycopg import sql

from arb_pipeline.catalog import introspect
from arb_pipeline.load.key_ranges import KeyRanges
from arb_pipeline.load.merge import written_columns
from arb_pipeline.load.staging import stage_table
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.introspect import Column, TableInfo
from arb_pipeline_tests.support.backups import P, complete_for_yesterday, load, seeded_sender
from arb_pipeline_tests.support.traffic import traffic

EVENTS = P + "eventforbusv2"


@pytest.fixture
def sender(sender_db, tmp_path):
    with seeded_sender(sender_db, tmp_path, seed=5) as world:
        traffic(world[2], 120)
        yield world


def _events_load(result):
    return next(t for t in result.tables if t.table == EVENTS)


def test_a_change_in_every_range_is_compared_whole_and_loads_the_same(sender, receiver_db, tmp_path):
    """A bulk update on the sender touching every row: every range differs, so narrowing
    compares all staged rows at once, and every row is written."""
    dsn, media, _ = sender
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    with connect(dsn) as conn:
        changed = conn.execute(f'UPDATE "{EVENTS}" SET "eventDecline" = "eventDecline" + 1').rowcount
    assert changed > 10
    row = _events_load(load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media)))
    assert row.rows_compared == row.rows_in_backup == changed
    assert row.rows_written == changed
    assert compare_tables(dsn, receiver_db, tables=[EVENTS]).ok


def test_a_receiver_side_change_is_found_by_its_range_and_repaired(sender, receiver_db, tmp_path):
    """A sender column changed on the receiver behind the pipeline's back (same version):
    its range's summed hash differs, so the next complete compares and rewrites that row."""
    dsn, media, _ = sender
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    with connect(receiver_db) as conn:
        victim = conn.execute(f'SELECT max(id) - 1 FROM "{EVENTS}"').fetchone()[0]
        conn.execute(f'UPDATE "{EVENTS}" SET "eventConfirm" = -7 WHERE id = %s', (victim,))
    assert not compare_tables(dsn, receiver_db, tables=[EVENTS]).ok
    row = _events_load(load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media)))
    assert 1 <= row.rows_compared < row.rows_in_backup // 2
    assert row.changed_keys == (victim, victim)  # the merge reads the table there only
    assert row.rows_written == 1
    assert compare_tables(dsn, receiver_db, tables=[EVENTS]).ok


def test_the_digest_summed_by_key_range_is_the_files_fingerprint(sender, receiver_db, tmp_path):
    """Staging sums the file's digest by key range when it narrows: its total is the very
    fingerprint the check after the load compares the table with."""
    dsn, media, _ = sender
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    entry = next(f for f in complete.manifest.files if f.table == EVENTS)
    with connect(receiver_db, autocommit=True) as conn:
        info = introspect(conn, [EVENTS])[EVENTS]
        ranges = KeyRanges.of(conn, info, written_columns(entry, info))
        assert ranges is not None and ranges.columns == [c.name for c in entry.columns]
        by_range = stage_table(
            conn,
            complete.staged.root,
            entry,
            info,
            sql.Identifier("x_ranged"),
            temporary=False,
            fingerprint=True,
            key_ranges=ranges,
        )
        plain = stage_table(
            conn,
            complete.staged.root,
            entry,
            info,
            sql.Identifier("x_plain"),
            temporary=False,
            fingerprint=True,
        )
        conn.execute("DROP TABLE x_ranged, x_plain")
    assert by_range.fingerprint == plain.fingerprint and by_range.fingerprint.rows == entry.rows
    assert by_range.key_ranges is ranges and sum(n for n, _ in ranges.staged.values()) == entry.rows


def test_only_a_single_integer_key_of_a_versioned_non_empty_table_has_ranges(receiver_db):
    def info(key_type="integer", key=("id",), versioned=True, name=EVENTS):
        cols = [Column("id", key_type, True), Column("code", "text", True)]
        if versioned:
            cols.append(Column("arb_synced_at", "timestamp with time zone", False))
        return TableInfo(name, tuple(cols), key)

    with connect(receiver_db) as conn:
        assert KeyRanges.of(conn, info(key_type="text"), ["id", "code"]) is None
        assert KeyRanges.of(conn, info(key=("id", "code")), ["id", "code"]) is None
        assert KeyRanges.of(conn, info(versioned=False), ["id", "code"]) is None
        assert KeyRanges.of(conn, info(), ["id", "code"]) is None  # the receiver's table is empty
