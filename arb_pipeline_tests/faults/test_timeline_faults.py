"""Fault matrix, time and environment (scenarios 14-18): a receiver down for a day, a full
volume, a transaction committing late, app clocks off, a sender schema ahead of the receiver.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.definitions import defs as receiver_defs
from arb_pipeline_tests.faults.harness import complete_day, first_key
from arb_pipeline_tests.support.alerts import Ticker, mailer_for

P = "AndroidRequests_"


def _has_bus_event(dsn: str, event_id: int) -> bool:
    with connect(dsn) as conn:
        return bool(conn.execute(f'SELECT 1 FROM "{P}eventforbusv2" WHERE id = %s', (event_id,)).fetchone())


def test_14_receiver_down_for_a_day_then_catch_up(pipeline):
    p = pipeline
    p.start(first_key(27 * 60))
    # While the receiver is down: partials through a day, the daily complete, more partials.
    before = [first_key(m) for m in (25 * 60, 20 * 60, 14 * 60)]
    after = [first_key(m) for m in (8 * 60, 3 * 60, 90)]
    for key in before:
        p.traffic(key, 40)
        p.send(key)
    p.send(complete_day(), "complete")
    for key in after:
        p.traffic(key, 40)
        p.send(key)
    loaded = p.receive_ok()  # oldest snapshot first, a bounded batch per tick
    assert len(loaded) == 7
    assert [b.split("-")[0] for b in loaded] == ["partial"] * 3 + ["complete"] + ["partial"] * 3
    assert list(p.ledger().values()).count("loaded") == 8
    p.assert_parity()


@pytest.mark.needs_root
@pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (.ci/run runs it in its root phase)"
)
def test_15_receiver_volume_full_then_space_freed(pipeline, smtp_server):
    p = pipeline
    volume = p.root / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "arb-full", str(volume)], check=True)
    try:
        p.receiver_media = volume / "media"
        p.receiver_media.mkdir()
        k1, _, _ = p.begin()
        p.traffic(k1, 60, ops={"report": 10, "vote_bus": 5})
        p.send(k1)
        filler = volume / "filler"
        with filler.open("wb") as out:  # fill the volume to the last block
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        ledger = p.ledger()
        p.retry_after_seconds = 3600  # one attempt now; the sensor's retry timer comes later
        done = p.receive()
        assert [res.success for _, res in done] == [False]
        assert p.ledger() == ledger and len(p.published()) == 1, "the backup waits in the inbox, unloaded"
        alerts = Ticker(
            receiver_defs.get_sensor_def("receiver_failure_alerts"),
            p.instance("receiver"),
            receiver_defs,
            mailer_for(smtp_server),
        )
        alerts.tick()
        [mail] = smtp_server.wait_for(1)
        assert "load_partial" in mail.subject + mail.body and "space" in mail.body.lower()
        filler.unlink()  # an admin frees space; the sensor retries by itself
        p.retry_after_seconds = 0  # (its retry timer, ARB_RETRY_AFTER_SECONDS, has run out)
        assert len(p.receive_ok()) == 1
        p.assert_parity()
    finally:
        subprocess.run(["umount", "--lazy", str(volume)], check=False)


def test_16_a_transaction_committing_8_minutes_late(pipeline):
    p = pipeline
    k1, k2, k3 = p.begin()
    p.traffic(k1, 30)
    with p.workload(k1, at_second=270) as work:  # its timeStamp: 30 s before k1 closes
        late = work.late_vote("bus")
        # k1 and k2 run while the transaction is open (k2 closes 5.5 min after its timeStamp)...
        p.send(k1)
        p.send(k2)
        p.receive_ok()
        assert not _has_bus_event(p.receiver_dsn, late.result.event_row_id)
        late.commit()  # ...it commits 8 minutes after its timeStamp
    p.send(k3)  # k3 re-reads [k3 - 15 min, k3 end): the row is in it
    p.receive_ok()
    assert _has_bus_event(p.receiver_dsn, late.result.event_row_id)
    p.assert_parity()


def test_17_app_clock_3_minutes_off(pipeline):
    p = pipeline
    k1, k2, k3 = p.begin()
    # Ahead: written while k1 was open, stamped 3 minutes later, in k2.
    p.traffic(k1, 40, at_second=120 + 180)
    p.send(k1)
    p.send(k2)
    # Behind: written after k1's backup ran, stamped 3 minutes earlier, back in k1.
    p.traffic(k1, 40, at_second=280)
    p.send(k3)  # its overlap reaches back over k1
    p.receive_ok()
    p.assert_parity()


def test_18_sender_schema_gains_a_column_before_the_receiver(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    with connect(p.sender_dsn) as conn:  # the app's migration, on the sender only
        conn.execute(f'ALTER TABLE "{P}report" ADD COLUMN priority integer NOT NULL DEFAULT 3')
    p.traffic(k1, 60, ops={"report": 10, "vote_bus": 5})
    p.send(k1)
    assert len(p.receive_ok()) == 1  # loads what the receiver has; a warning names the column
    p.assert_parity()  # on the columns both have
    with connect(p.receiver_dsn) as conn:  # the receiver's migration, later
        conn.execute(f'ALTER TABLE "{P}report" ADD COLUMN priority integer')
        unfilled = conn.execute(f'SELECT count(*) FROM "{P}report" WHERE priority IS NULL').fetchone()[0]
    assert unfilled > 0
    p.traffic(k2, 30, ops={"report": 10})
    p.send(k2)
    p.send(complete_day(), "complete")  # the next complete fills it
    p.receive_ok()
    p.assert_parity()
    with connect(p.receiver_dsn) as conn:
        assert (
            conn.execute(f'SELECT count(*) FROM "{P}report" WHERE priority IS DISTINCT FROM 3').fetchone()[0]
            == 0
        )
