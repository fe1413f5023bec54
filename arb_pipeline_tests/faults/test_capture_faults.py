"""Capture-mode faults (issue 18, item 6), on a real wal_level=logical sender with the app's full
traffic, each ending in full parity (every replicated table): the sender killed between the
publish and the slot advance, killed while decoding the slot, and the sender's PostgreSQL
crashed and restarted. The slot dropped by hand is capture/test_capture_resync.py.

A kill is a real SIGKILL of a process building and publishing a captured partial as the
asset does (publish, manifest last, then advance: extract/captured.py); the receiver loads
what reached its inbox."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.setup import plan_setup, run_plan
from arb_pipeline.capture.slot import slot_status
from arb_pipeline.catalog import current_catalog
from arb_pipeline.extract.captured import CaptureSource, publish_and_advance
from arb_pipeline.load.apply import load_backup
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.backups import (
    P,
    complete_for_yesterday,
    load,
    manifest_sha256,
    new_sender,
    wide_window,
)
from arb_pipeline_tests.support.capture import PUBLICATION, captured_partial
from arb_pipeline_tests.support.traffic import traffic

POSITION = P + "devicepositionintime"
_n = iter(range(10_000))

# The asset's steps in a process of their own, so the test can SIGKILL it: build, publish
# (manifest last), then, unless told to die first, advance the slot.
_CHILD = """
import json, os, signal, sys
from pathlib import Path
from arb_pipeline.extract.captured import CaptureSource, advance_past, build_captured_partial
from arb_pipeline.extract.build import publish
from arb_pipeline.extract.tables import Window
from arb_pipeline.transport.local import LocalFolderTransport
from datetime import datetime
a = json.loads(sys.argv[1])
window = Window(datetime.fromisoformat(a["start"]), datetime.fromisoformat(a["end"]))
built = build_captured_partial(
    a["dsn"], Path(a["staging"]), partition_key=a["key"], window=window, unique=a["unique"],
    media_dir=Path(a["media"]), sender_id="faults", source=CaptureSource(a["slot"], a["pub"]),
)
publish(LocalFolderTransport(Path(a["inbox"])), built)
if a["die_after_publish"]:
    os.kill(os.getpid(), signal.SIGKILL)
advance_past(built, a["dsn"])
"""


@pytest.fixture
def world(logical_pg_cluster, receiver_db, tmp_path):
    """(dsn, media, staging, inbox, slot, work): a sender set up as `arb capture setup` does, a
    pinned complete loaded on the receiver, the app's full traffic running."""
    from arb_pipeline.dev.generator.workload import Workload

    dsn, media, staging = new_sender(logical_pg_cluster, tmp_path, seed=23)
    slot = f"arb_f_{uuid.uuid4().hex[:12]}"
    with connect(dsn, autocommit=True) as conn:
        run_plan(conn, plan_setup(conn, slot, PUBLICATION, current_catalog().table_names))
    inbox = tmp_path / "inbox"
    try:
        with Workload(dsn, media, seed=23) as work:
            traffic(work, 40)
            pinned = complete_for_yesterday(dsn, staging, media, pin_to_slot=True)
            assert load(receiver_db, pinned).outcome == "loaded"
            yield dsn, media, staging, inbox, slot, work
    finally:
        with connect(logical_pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )


def _child(dsn, media, staging, inbox, slot, *, die_after_publish=False) -> subprocess.Popen:
    window = wide_window()
    args = {
        "dsn": dsn,
        "staging": str(staging),
        "media": str(media),
        "inbox": str(inbox),
        "slot": slot,
        "pub": PUBLICATION,
        "key": window.start.strftime("%Y-%m-%d-%H-%M"),
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "unique": f"k{next(_n):07d}",
        "die_after_publish": die_after_publish,
    }
    return subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(args)], stderr=subprocess.PIPE)


def _build(dsn, media, staging, inbox, slot):
    """The next captured partial, in process, published and advanced."""
    built = captured_partial(dsn, staging, media, CaptureSource(slot, PUBLICATION), sender_id="faults")
    publish_and_advance(LocalFolderTransport(inbox), built, dsn)
    return built


def _load_inbox(receiver_db, inbox: Path) -> list[str]:
    """Every published backup in the inbox, oldest first, loaded; their outcomes."""
    folders = sorted((inbox / "partial").iterdir(), key=lambda f: read_manifest(f).snapshot_time)
    outcomes = []
    for folder in folders:
        if (folder / MANIFEST_NAME).exists():
            with connect(receiver_db) as conn:
                result = load_backup(conn, folder, read_manifest(folder), manifest_sha256(folder))
            outcomes.append(result.outcome)
    return outcomes


def _position(dsn, slot) -> int:
    with connect(dsn, autocommit=True) as conn:
        return slot_status(conn, slot).confirmed_flush_lsn


def _parity(dsn, receiver_db):
    report = compare_tables(dsn, receiver_db)  # every replicated table
    assert report.ok, report.format()


def _silent_changes(dsn, work):
    work.mark_declined_broken()
    work.purge_active_tokens()
    traffic(work, 20)


def test_killed_between_publish_and_slot_advance_republishes_the_same_changes(world, receiver_db):
    dsn, media, staging, inbox, slot, work = world
    traffic(work, 80)
    _silent_changes(dsn, work)
    before = _position(dsn, slot)
    child = _child(dsn, media, staging / "a", inbox, slot, die_after_publish=True)
    assert child.wait(120) == -signal.SIGKILL, child.stderr.read().decode()
    assert _position(dsn, slot) == before  # published, never advanced
    traffic(work, 30)
    again = _build(dsn, media, staging / "b", inbox, slot)  # the next run reads the same changes again
    assert again.manifest.capture.from_lsn and parse_lsn(again.manifest.capture.from_lsn) == before
    assert _load_inbox(receiver_db, inbox) == ["loaded", "loaded"]
    _parity(dsn, receiver_db)


def test_killed_mid_decode_leaves_the_slot_and_publishes_nothing(world, receiver_db):
    dsn, media, staging, inbox, slot, work = world
    traffic(work, 40)
    _silent_changes(dsn, work)
    with connect(dsn) as conn:  # a window large enough to be caught while it decodes
        conn.execute(
            f'INSERT INTO "{POSITION}" (longitude, latitude, "timeStamp", "phoneId") '
            "SELECT g, g, now(), gen_random_uuid() FROM generate_series(1, 150000) g"
        )
        conn.commit()
    before = _position(dsn, slot)
    child = _child(dsn, media, staging / "a", inbox, slot)
    deadline = time.monotonic() + 60
    with connect(dsn, autocommit=True) as conn:
        while not conn.execute(  # the child fetching the slot's changes through its cursor
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            ("%FETCH%arb_capture_%",),
        ).fetchone():
            assert child.poll() is None and time.monotonic() < deadline, "the decode was not seen"
            time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    assert not any(inbox.glob("partial/*/manifest.json"))  # nothing committed on the receiver
    assert _position(dsn, slot) == before
    _wait_until_released(dsn, slot)
    traffic(work, 20)
    _build(dsn, media, staging / "b", inbox, slot)
    assert _load_inbox(receiver_db, inbox) == ["loaded"]
    _parity(dsn, receiver_db)


def _wait_until_released(dsn, slot, timeout: float = 30) -> None:
    """The killed client's backend goes once it notices: the slot is free again."""
    deadline = time.monotonic() + timeout
    while _active(dsn, slot) and time.monotonic() < deadline:
        time.sleep(0.1)


def _active(dsn, slot) -> bool:
    with connect(dsn, autocommit=True) as conn:
        return bool(slot_status(conn, slot).active)


def test_the_sender_restarted_after_a_crash_keeps_its_slot_and_ends_in_parity(
    world, receiver_db, logical_pg_cluster
):
    dsn, media, staging, inbox, slot, work = world
    traffic(work, 60)
    _silent_changes(dsn, work)
    first = _build(dsn, media, staging / "a", inbox, slot)
    traffic(work, 30)
    work.close()  # its connection dies with the server
    pg = logical_pg_cluster
    pg._run_as_service([str(pg.bin_dir / "pg_ctl"), "-D", str(pg.data_dir), "-m", "immediate", "-w", "stop"])
    pg.start()  # crash recovery; the slot is persistent, its position at least as old as advanced
    position = _position(dsn, slot)
    assert position <= parse_lsn(first.manifest.capture.to_lsn)
    from arb_pipeline.dev.generator.workload import Workload

    with Workload(dsn, media, seed=29) as after:
        traffic(after, 40)
        _silent_changes(dsn, after)
    _build(dsn, media, staging / "b", inbox, slot)  # what was committed before the crash included
    assert _load_inbox(receiver_db, inbox) == ["loaded", "loaded"]
    _parity(dsn, receiver_db)
