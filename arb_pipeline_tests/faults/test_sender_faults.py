"""Fault matrix, sender side (scenarios 1-5): runs killed or cut off on their way out.

Each scenario: a baseline complete loaded, app traffic in closed windows, one fault while
the sender runs, then the system's own recovery (the next scheduled window re-reads the
overlap; the SFTP client retries; a killed run's pool slot is given back by run
monitoring), and full parity between the two databases and media folders.
"""

from __future__ import annotations

import time

from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.faults.harness import temp_uploads, wait_for, waiting_on_lock

REPORT = '"AndroidRequests_report"'


def test_1_sender_killed_during_extraction(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    p.traffic(k1, 80)
    with connect(p.sender_dsn) as lock:  # the extraction waits on this lock: that's where it dies
        lock.execute(f"LOCK TABLE {REPORT} IN ACCESS EXCLUSIVE MODE")
        run = p.send_cli(k1)
        wait_for(lambda: waiting_on_lock(p.sender_dsn), 120, "the extraction to reach the locked table")
        run.kill()
    assert p.published() == [] and temp_uploads(p.inbox) == []
    # Recovery: the dead-run sensor fails the run and frees its pool slot (or the next run
    # would wait for it forever); the next window's run re-reads k1 inside its overlap.
    assert len(p.reap("sender")) == 1
    p.next_window_recovers(k2, cli=True)


def _backup_folders(p) -> list:
    folder = p.inbox / "partial"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_2_sender_killed_during_upload(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    p.traffic(k1, 200)
    p.proxy.rate = 30_000  # bytes/s: the upload lasts seconds, long enough to be cut
    run = p.send_cli(k1)
    wait_for(lambda: temp_uploads(p.inbox), 120, "an upload in progress")
    run.kill()
    p.proxy.rate = None
    assert p.published() == []
    assert p.receive_ok() == []  # a half-uploaded file under its temporary name is never read
    assert len(p.reap("sender")) == 1
    p.next_window_recovers(k2, cli=True)


def test_3_sender_killed_after_upload_before_the_manifest(pipeline):
    p = pipeline
    k1, k2, _ = p.begin()
    p.traffic(k1, 200)
    p.proxy.rate = 20_000
    run = p.send_cli(k1)

    def everything_but_the_manifest():
        return [f for f in _backup_folders(p) if (f / "media.tar").exists()]

    # media.tar is published right before the manifest: freeze the link the moment it lands.
    [folder] = wait_for(everything_but_the_manifest, 180, "media.tar in place", interval=0.002)
    p.proxy.stall()
    run.kill()
    p.proxy.rate = None
    assert not (folder / "manifest.json").exists(), "the manifest came too fast for this scenario"
    assert list((folder / "tables").iterdir()), "the table files were uploaded"
    assert p.receive_ok() == []  # no manifest, no backup: the folder is not read
    assert len(p.reap("sender")) == 1
    p.next_window_recovers(k2, cli=True)


def test_4_sshd_stopped_mid_upload_then_restarted(pipeline):
    p = pipeline
    k1, _, _ = p.begin()
    p.traffic(k1, 200)
    p.proxy.rate = 30_000
    run = p.send_cli(k1)
    wait_for(lambda: temp_uploads(p.inbox), 120, "an upload in progress")
    p.sshd.stop()  # the listener and the open session
    p.proxy.rate = None
    time.sleep(2)  # connections are refused meanwhile; the client backs off
    p.sshd.start()
    run.assert_ok()  # the same run retries on a new connection and succeeds
    assert "retry" in run.output()
    assert temp_uploads(p.inbox) == [], "the interrupted attempt's temporary file is removed"
    assert len(p.receive_ok()) == 1
    p.assert_parity()


def test_5_a_stalled_connection_times_out_and_retries(pipeline):
    p = pipeline
    p.io_timeout = 4
    k1, _, _ = p.begin()
    p.traffic(k1, 200)
    p.proxy.rate = 30_000
    connections = p.proxy.connections
    run = p.send_cli(k1)
    wait_for(lambda: temp_uploads(p.inbox), 120, "an upload in progress")
    p.proxy.stall()  # no bytes either way, sockets open: a silent peer
    p.proxy.rate = None
    run.assert_ok()
    assert "TimeoutError; retry 1/4" in run.output()
    assert p.proxy.connections - connections >= 2, "the retry came on a new connection"
    assert temp_uploads(p.inbox) == []
    assert len(p.receive_ok()) == 1
    p.assert_parity()
