"""Fault matrix, receiver side (scenarios 6-13): loads killed, backups repeated, reordered,
tampered or cut short. Backups are made by real sender runs over SFTP; the receiver is
its inbox sensor and load assets (the `dagster` CLI where a run must be killed).
"""

from __future__ import annotations

import shutil

from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.faults.harness import complete_day, wait_for

P = "AndroidRequests_"


def _counts(dsn: str) -> dict[str, int]:
    with connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE "
                "'AndroidRequests_%'"
            )
        ]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def _lock_waiter(dsn: str) -> str | None:
    """The query of a session waiting for a lock in that database (our held LOCK TABLE)."""
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return row[0] if row else None


def _kill_while_locked(p, table: str, run, dsn: str, mode: str = "ACCESS EXCLUSIVE") -> str:
    """Hold ``mode`` on ``table`` until ``run`` waits for it, SIGKILL the run, release."""
    with connect(dsn) as lock:
        lock.execute(f'LOCK TABLE "{table}" IN {mode} MODE')
        query = wait_for(lambda: _lock_waiter(dsn), 120, f"the run to wait on {table}")
        run.kill()
    return query


def test_6_receiver_load_killed(pipeline):
    p = pipeline
    k1, _, _ = p.begin()
    p.traffic(k1, 80)
    p.send(k1)
    before, ledger = _counts(p.receiver_dsn), p.ledger()
    query = _kill_while_locked(p, P + "report", p.receive_cli(k1), p.receiver_dsn)
    assert _counts(p.receiver_dsn) == before and p.ledger() == ledger, "a killed load leaves nothing behind"
    assert "report" in query
    assert len(p.reap("receiver")) == 1  # its pool slot and db-load place are given back
    assert len(p.receive_ok()) == 1  # the sensor requests the backup still in the inbox
    p.assert_parity()


def test_7_receiver_killed_during_a_complete_swap(pipeline):
    p = pipeline
    k1, _, _ = p.begin()
    p.traffic(
        k1,
        80,
        ops={
            "vote_bus": 10,
            "report": 5,
            "trip": 5,
            "purge_active_tokens": 2,
            "mark_declined_broken": 2,
            "device_position": 5,
        },
    )
    p.send(complete_day(), "complete")
    before, ledger = _counts(p.receiver_dsn), p.ledger()
    # SHARE lets the staging sessions read the table (they narrow the staged rows to what
    # changed, before the transaction) and stops the first write: the transaction's MERGE.
    query = _kill_while_locked(
        p, P + "eventforbusv2", p.receive_cli(complete_day(), "complete"), p.receiver_dsn, "SHARE"
    )
    assert "MERGE" in query.upper() or "DELETE" in query.upper(), f"killed outside the swap: {query}"
    assert _counts(p.receiver_dsn) == before and p.ledger() == ledger
    assert len(p.reap("receiver")) == 1
    assert len(p.receive_ok()) == 1
    p.assert_parity()


def test_8_postprocess_killed(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    p.traffic(k1, 80)
    p.send(k1)
    p.receive_ok()
    _kill_while_locked(p, P + "reportinfo", p.receive_cli(k1, "postprocess"), p.receiver_dsn)
    assert len(p.reap("receiver")) == 1
    # The next load's materialization wakes postprocess_sensor; its run computes all that is pending.
    p.traffic(k2, 30)
    p.send(k2)
    p.receive_ok()
    assert len(p.postprocess()) == 1
    p.assert_postprocessed()
    p.assert_parity()


def test_9_the_same_backup_delivered_twice(pipeline):
    p = pipeline
    k1, _, _ = p.begin()
    p.traffic(k1, 80)
    p.send(k1)
    p.send(k1)  # the partition run again: a second backup, same rows
    [first, second] = p.published()
    aside = p.root / "aside"
    shutil.copytree(first, aside)
    assert len(p.receive_ok()) == 2
    counts = _counts(p.receiver_dsn)
    shutil.rmtree(first)  # and the very same folder delivered again
    shutil.copytree(aside, first)
    assert p.receive_ok() == []
    assert _counts(p.receiver_dsn) == counts
    assert sorted(p.ledger().values()).count("loaded") == 3  # the baseline complete and the two partials
    p.assert_parity()


def test_10_backups_delivered_out_of_order(pipeline):
    p = pipeline
    keys = p.begin()
    for key in keys:
        p.traffic(key, 50)
        p.send(key)
    held = p.root / "held"
    held.mkdir()
    folders = p.published()
    for f in folders:
        shutil.move(f, held / f.name)
    for f in (folders[2], folders[0], folders[1]):  # N+2, N, N+1
        shutil.move(held / f.name, f)
        assert len(p.receive_ok()) == 1
    p.assert_parity()


def test_11_a_complete_arriving_after_newer_partials(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    p.traffic(k1, 60)
    p.send(k1)
    p.send(complete_day(), "complete")
    p.traffic(k2, 60)  # votes after the complete's snapshot
    p.send(k2)
    held = p.root / "held"
    [complete] = [c for c in p.published("complete") if c.name not in p.ledger()]
    shutil.move(complete, held)
    assert len(p.receive_ok()) == 2  # both partials first
    shutil.move(held, complete)
    assert len(p.receive_ok()) == 1  # then the older complete: it must not roll k2 back
    assert p.ledger()[complete.name] == "loaded"
    p.assert_parity()


def _flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_file_then_recovery(p, damage) -> None:
    k1, k2, _ = p.begin()
    p.traffic(k1, 80)
    p.send(k1)
    [folder] = p.published()
    biggest = max((folder / "tables").iterdir(), key=lambda f: f.stat().st_size)
    damage(biggest)
    before = _counts(p.receiver_dsn)
    done = p.receive()
    assert [res.success for _, res in done] == [False]
    assert (p.quarantine / "partial" / folder.name / MANIFEST_NAME).exists() and not folder.exists()
    assert _counts(p.receiver_dsn) == before
    p.next_window_recovers(k2)  # its overlap re-reads k1


def test_12_a_tampered_file(pipeline):
    _bad_file_then_recovery(pipeline, _flip_a_byte)


def test_13_a_truncated_file(pipeline):
    _bad_file_then_recovery(pipeline, _truncate)
