"""What a complete deletes on a receiver that held rows before the pipeline, and `arb adopt`.

Rows inserted straight into the receiver (as the old tool or Django would: no
arb_synced_at) are history no backup wrote: a complete keeps them and their derived rows,
except in tables the catalog marks "mirror". Rows a backup wrote and the newer complete
lacks are deleted, unless a kept row still references them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline.load.checks import check_complete
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import P, complete_for_yesterday, load, seeded_sender
from arb_pipeline_tests.support.traffic import traffic

OLD = 900_000  # ids of the receiver's own history, far from the sender's serials
EV, STAT, TOKEN, ACTIVE = (
    P + t for t in ("eventforbusv2", "stadisticdatafromregistrationbus", "token", "activetoken")
)


@pytest.fixture
def sender(sender_db, tmp_path):
    with seeded_sender(sender_db, tmp_path, seed=5) as world:
        yield world


def _ids(dsn, table, where="true"):
    with connect(dsn) as conn:
        return {r[0] for r in conn.execute(f'SELECT id FROM "{table}" WHERE {where}')}


def _insert_history(receiver):
    """As the old tool did: an old bus event with a vote, its derived row, and a trip with an
    active token, all without arb_synced_at. Returns the ids of the shipped event voted on."""
    with connect(receiver) as conn:
        ev = conn.execute(f'SELECT id, event_id, busassignment_id FROM "{EV}" ORDER BY id LIMIT 1').fetchone()
        conn.execute(
            f'INSERT INTO "{EV}" (id, "timeStamp", "timeCreation", event_id, "phoneId", busassignment_id) '
            "VALUES (%s, now() - interval '3 years', now() - interval '3 years', %s, gen_random_uuid(), %s)",
            (OLD, ev[1], ev[2]),
        )
        conn.execute(f'UPDATE "{EV}" SET "timePeriod_id" = 1, transformed = true WHERE id = %s', (OLD,))
        for i, parent in enumerate((OLD, ev[0])):  # a vote on the old event, one on a shipped event
            conn.execute(
                f'INSERT INTO "{STAT}" (id, longitude, latitude, "timeStamp", "confirmDecline", "phoneId", '
                "\"reportOfEvent_id\") VALUES (%s, 0, 0, now(), 'confirm', gen_random_uuid(), %s)",
                (OLD + i, parent),
            )
        token = conn.execute(f'SELECT * FROM "{TOKEN}" LIMIT 1').fetchone()
        cols = [d.name for d in conn.execute(f'SELECT * FROM "{TOKEN}" LIMIT 0').description]
        values = dict(zip(cols, token, strict=True), id=OLD, arb_synced_at=None)
        if "token" in values:
            values["token"] = "old-receiver-token"
        conn.execute(
            f'INSERT INTO "{TOKEN}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in values)}) '
            f"VALUES ({', '.join(['%s'] * len(values))})",
            list(values.values()),
        )
        conn.execute(f'INSERT INTO "{ACTIVE}" (id, "timeStamp", token_id) VALUES (%s, now(), %s)', (OLD, OLD))
    return ev[0]


def _delete_on_sender(dsn, event_id):
    with connect(dsn) as conn:
        conn.execute(f'DELETE FROM "{STAT}" WHERE "reportOfEvent_id" = %s', (event_id,))
        conn.execute(f'DELETE FROM "{EV}" WHERE id = %s', (event_id,))


def test_a_complete_keeps_what_no_backup_wrote_and_deletes_what_one_did(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    traffic(work, 150)
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    _insert_history(receiver_db)
    gone = max(_ids(dsn, EV))  # no kept row references it (the receiver's vote is on the first)
    _delete_on_sender(dsn, gone)
    held = min(_ids(dsn, EV))
    with connect(receiver_db) as conn:  # loaded the old way: the same row, but no version
        conn.execute(f'UPDATE "{EV}" SET arb_synced_at = NULL WHERE id = %s', (held,))
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    result = load(receiver_db, complete)

    assert held in _ids(receiver_db, EV, "arb_synced_at IS NOT NULL")  # the complete holds it: claimed

    assert gone not in _ids(receiver_db, EV)  # a backup wrote it, the newer complete lacks it
    assert {OLD} <= _ids(receiver_db, EV, "arb_synced_at IS NULL")  # history stays...
    assert _ids(receiver_db, EV, '"timePeriod_id" = 1') >= {OLD}  # ...with its derived values
    assert {OLD, OLD + 1} <= _ids(receiver_db, STAT, "arb_synced_at IS NULL")
    assert OLD in _ids(receiver_db, TOKEN, "arb_synced_at IS NULL")
    assert OLD not in _ids(receiver_db, ACTIVE)  # activetoken is "mirror" in the catalog
    assert result.rows_deleted >= 2
    folder = complete.staged.root
    checks = check_complete(receiver_db, folder, read_manifest(folder), result)
    assert all(c.passed for c in checks.values()), [c.description for c in checks.values() if not c.passed]
    untouched = [t for t in current_catalog().complete_tables if t not in (EV, STAT, TOKEN)]
    assert compare_tables(dsn, receiver_db, tables=untouched).ok


def _arb(*args, dsn):
    env = {**os.environ, "ARB_RECEIVER_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "arb_pipeline.cli.main", "adopt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_kept_row_keeps_its_parent_then_adopt_prunes_and_parity_holds(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    traffic(work, 150)
    refused = _arb("--prune-unshipped", dsn=receiver_db)
    assert refused.returncode == 2 and "no complete backup has been loaded" in refused.stderr
    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))
    voted = _insert_history(receiver_db)
    _delete_on_sender(dsn, voted)  # the sender drops an event the receiver's own vote points at
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    result = load(receiver_db, complete)
    assert result.outcome == "loaded"
    assert voted in _ids(receiver_db, EV, "arb_synced_at IS NOT NULL")  # kept: a kept row needs it
    checks = check_complete(receiver_db, complete.staged.root, read_manifest(complete.staged.root), result)
    assert all(c.passed for c in checks.values()), [c.description for c in checks.values() if not c.passed]

    dry = _arb("--prune-unshipped", "--dry-run", dsn=receiver_db)
    assert dry.returncode == 0, dry.stderr
    assert "eventforbusv2: 1 row(s) no backup wrote" in dry.stdout
    assert "stadisticdatafromregistrationbus: 2 row(s)" in dry.stdout
    assert OLD in _ids(receiver_db, EV)  # a dry run deletes nothing

    pruned = _arb("--prune-unshipped", dsn=receiver_db)
    assert pruned.returncode == 0, pruned.stderr
    assert "eventforbusv2: 1 of 1 row(s) no backup wrote deleted" in pruned.stdout
    for table in current_catalog().complete_tables:
        assert not _ids(receiver_db, table, "arb_synced_at IS NULL"), table

    load(receiver_db, complete_for_yesterday(dsn, tmp_path / "s", media))  # nothing needs the parent now
    assert voted not in _ids(receiver_db, EV)
    assert compare_tables(dsn, receiver_db).ok


def test_a_catalog_entry_with_an_unknown_delete_policy_is_refused():
    from arb_pipeline.catalog import TableSpec
    from arb_pipeline.errors import SchemaError

    with pytest.raises(SchemaError, match="delete_policy 'truncate' is not one of shipped-only, mirror"):
        TableSpec(P + "token", delete_policy="truncate")
