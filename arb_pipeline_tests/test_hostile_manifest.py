"""A hostile or broken sender's manifests (issue 16, items 1 and 4): each crafted backup sits
in a real inbox beside genuine ones, the inbox sensor ticks through Dagster's own evaluation
(``evaluate_tick``, which fails the whole tick on a partition key it doesn't know) and runs
what it requests. The crafted backup ends in the quarantine with a reason naming the field,
never in the ledger; the genuine ones load, and later genuine backups still load.

Crafted backups are copies of genuine ones (their files untouched, so they verify) under a new
backup id, with manifest fields changed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL, SHARED
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete
from arb_pipeline.extract.tables import Window
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.backup_id import build_backup_id, parse_backup_id
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest, ManifestError
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.plausible import key_start
from arb_pipeline.receive.quarantine import list_quarantined
from arb_pipeline.receiver.partition_fit import AT_FAULT, OK, REFUSED, WAITS, fit
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.receiver import Receiver, evaluate
from arb_pipeline_tests.support.traffic import BASELINE_OPS, PARTIAL_OPS, traffic_at

UTC = timezone.utc
TABLES = current_catalog().table_names
FUTURE = "2100-01-01T00:00:00+00:00"


@dataclass
class Genuine:
    """A sender and its genuine backups: a partial, then a complete, then a later partial."""

    dsn: str
    first: BuiltBackup
    complete: BuiltBackup
    later: BuiltBackup


@pytest.fixture(scope="module")
def genuine(pg_cluster, tmp_path_factory) -> Genuine:
    root = tmp_path_factory.mktemp("hostile-sender")
    dsn, media, staging = new_sender(pg_cluster, root, seed=16)
    k1 = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    k2 = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=30)).timestamp())
    traffic_at(dsn, media, 16, window_of(k1).start + timedelta(seconds=30), BASELINE_OPS, 60)
    first = partial_for(dsn, staging, media, k1, "g1")
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    tw = COMPLETE.time_window_for_partition_key(day)
    complete = build_complete(
        dsn,
        staging,
        partition_key=day,
        window=Window(tw.start, tw.end),
        unique="gc",
        media_dir=media,
        sender_id="test-sender",
        pg_dump=str(find_bin_dir() / "pg_dump"),
    )
    traffic_at(dsn, media, 17, window_of(k2).start + timedelta(seconds=30), PARTIAL_OPS, 30)
    later = partial_for(dsn, staging, media, k2, "g2")
    return Genuine(dsn, first, complete, later)


@pytest.fixture
def rx(receiver_db, tmp_path) -> Receiver:
    receiver = Receiver(receiver_db, tmp_path / "inbox", tmp_path / "rx-media", tmp_path / "quarantine")
    receiver.media.mkdir()
    return receiver


def craft(rx: Receiver, built: BuiltBackup, unique: str, change, key: str | None = None) -> Path:
    """A copy of ``built`` in the inbox as backup ``<kind>-<key>-<unique>`` (its manifest's key
    too) whose manifest ``change(doc)`` altered; the manifest is written last, as a sender publishes."""
    kind = built.manifest.kind
    backup_id = build_backup_id(kind, key or built.manifest.partition_key, unique)
    folder = rx.inbox / kind / backup_id
    shutil.copytree(built.staged.root, folder, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    doc = built.manifest.to_dict()
    doc.update(backup_id=backup_id, partition_key=key or built.manifest.partition_key)
    change(doc)
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    return folder


def set_window(start: datetime, length: timedelta):
    def change(doc):
        doc["window"].update(start=start.isoformat(), end=(start + length).isoformat(), extract_from=None)

    return change


def ledger(dsn: str) -> dict[str, str]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())


def row_counts(dsn: str) -> dict[str, int]:
    with connect(dsn) as conn:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in TABLES}


def quarantined(rx: Receiver) -> dict[str, str]:
    """Folder name -> reason of everything in the quarantine."""
    return {q.name: q.reason for q in list_quarantined(rx.quarantine)}


def run_results(outcomes) -> dict[str, bool]:
    return {r.tags["arb/backup_id"]: res.success for r, res in outcomes}


def test_snapshot_times_a_sender_cannot_have_are_quarantined_and_genuine_backups_still_load(genuine, rx):
    """A complete and a partial whose manifests say 2100 (a sender's clock far ahead), then a
    complete older than the one loaded (a sender's clock set back): each run quarantines its
    backup before writing anything. The genuine backups around them load (not "superseded"),
    and the receiver equals its sender."""
    g = genuine
    rx.deliver(g.first)
    in_2100 = {
        craft(rx, g.complete, "cfuture", lambda doc: doc.update(snapshot_time=FUTURE)).name,
        craft(rx, g.first, "pfuture", lambda doc: doc.update(snapshot_time=FUTURE)).name,
    }
    resources = rx.resources()
    with dg.instance_for_test() as instance:
        data, outcomes = evaluate(instance, resources)
        assert run_results(outcomes) == {g.first.manifest.backup_id: True, **dict.fromkeys(in_2100, False)}
        assert ledger(rx.dsn) == {g.first.manifest.backup_id: "loaded"}
        reasons = quarantined(rx)
        assert set(reasons) == in_2100
        for reason in reasons.values():
            assert "manifest.snapshot_time 2100-01-01T00:00:00+00:00" in reason
            assert "ahead of this receiver's clock" in reason and "ARB_MAX_CLOCK_AHEAD_SECONDS" in reason

        rx.deliver(g.complete)
        data, outcomes = evaluate(instance, resources, data.cursor)
        assert run_results(outcomes) == {g.complete.manifest.backup_id: True}
        before = row_counts(rx.dsn)
        older = (g.complete.manifest.snapshot_time - timedelta(hours=1)).isoformat()
        stale = craft(rx, g.complete, "older", lambda doc: doc.update(snapshot_time=older))
        _, outcomes = evaluate(instance, resources, data.cursor)
        assert run_results(outcomes) == {stale.name: False}
        assert row_counts(rx.dsn) == before
        reason = quarantined(rx)[stale.name]
        assert f"is before that of complete {g.complete.manifest.backup_id}" in reason
        assert "would roll the receiver back" in reason

        rx.deliver(g.later)
        _, outcomes = evaluate(instance, resources)
        assert run_results(outcomes) == {g.later.manifest.backup_id: True}
    assert ledger(rx.dsn) == {
        g.first.manifest.backup_id: "loaded",
        g.complete.manifest.backup_id: "loaded",
        g.later.manifest.backup_id: "loaded",
    }
    assert set(quarantined(rx)) == in_2100 | {stale.name}
    report = compare_tables(g.dsn, rx.dsn)
    assert report.ok, report.format()


def test_whatever_a_folder_holds_the_tick_completes_and_the_good_backup_loads(genuine, rx, capsys):
    """Bad partition keys, a window off its key, manifests that don't parse, nest too deep,
    are too big, are a link or a FIFO: one tick through Dagster's evaluation completes, each
    bad folder is quarantined with its reason (by the tick, or by the run it requested), the
    genuine partial beside them loads. A key before ARB_GO_LIVE is the settings' fault: it
    stays in the inbox, refused."""
    g = genuine
    p = g.first
    k1, k2 = p.manifest.partition_key, g.later.manifest.partition_key
    start = window_of(k1).start
    five = timedelta(minutes=5)
    rx.deliver(p)
    future = datetime(2100, 1, 1, tzinfo=UTC)

    def other_key(doc):  # a valid key and its window, but not the key the backup id names
        doc["partition_key"] = k2
        set_window(start + 2 * five, five)(doc)

    expect = {  # folder name -> words of its reason
        craft(
            rx, p, "future", set_window(future, five), key="2100-01-01-00-00"
        ).name: "ahead of this receiver's",
        craft(rx, p, "unaligned", set_window(start + timedelta(minutes=3), five), key=_key(start, 3)).name: (
            "is not on the 5-minute grid"
        ),
        craft(rx, p, "dotdot", lambda doc: doc.update(partition_key="../../etc")).name: (
            "partition key '../../etc' is not a partial key"
        ),
        craft(rx, p, "offwindow", set_window(start + five, five)).name: f"not where partition {k1} does",
        craft(rx, p, "otherkey", other_key).name: f"manifest.partition_key '{k2}' is not the partition its",
    }
    past = craft(rx, p, "past", set_window(datetime(2020, 1, 1, tzinfo=UTC), five), key="2020-01-01-00-00")
    odd = {
        "partial-2100-01-01-00-00-garbled": b"{not json",
        f"partial-{k1}-garbled": b"{not json",
        f"partial-{k1}-nested": b"[" * 100_000,
    }
    for name, content in odd.items():
        (rx.inbox / "partial" / name).mkdir()
        (rx.inbox / "partial" / name / MANIFEST_NAME).write_bytes(content)
    expect.update(dict.fromkeys(list(odd)[:2], "not valid JSON"))
    expect[f"partial-{k1}-nested"] = "nested too deeply"
    huge = craft(rx, p, "huge", lambda doc: doc["extra"].update(pad="x" * (16 * 1024 * 1024)))
    expect[huge.name] = "more than ARB_MAX_MANIFEST_BYTES=16777216 bytes"
    link = craft(rx, p, "link", lambda doc: None)
    (link / MANIFEST_NAME).unlink()
    (link / MANIFEST_NAME).symlink_to(rx.folder(p) / MANIFEST_NAME)
    expect[link.name] = "is a symbolic link"
    fifo = craft(rx, p, "fifo", lambda doc: None)
    (fifo / MANIFEST_NAME).unlink()
    os.mkfifo(fifo / MANIFEST_NAME)
    expect[fifo.name] = "is not a regular file"

    resources = rx.resources()
    with dg.instance_for_test() as instance:
        data, outcomes = evaluate(instance, resources)  # raises if the tick fails
        results = run_results(outcomes)
        assert results.pop(p.manifest.backup_id) is True
        assert not any(results.values()) and set(results) <= set(expect)
        again, outcomes = evaluate(instance, resources, data.cursor)
        assert outcomes == [] and f"{past.name} refused" in again.skip_message
    assert ledger(rx.dsn) == {p.manifest.backup_id: "loaded"}
    reasons = quarantined(rx)
    assert set(reasons) == set(expect), sorted(set(reasons) ^ set(expect))
    for name, words in expect.items():
        assert words in reasons[name], (name, reasons[name])
    assert sorted(f.name for f in (rx.inbox / "partial").iterdir()) == sorted(
        [p.manifest.backup_id, past.name]
    )
    assert "ARB_GO_LIVE" in capsys.readouterr().err


def _key(start: datetime, minutes: int) -> str:
    return (start + timedelta(minutes=minutes)).strftime("%Y-%m-%d-%H-%M")


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads a mode-000 file; the symlink and FIFO cases stand in"
)
def test_a_manifest_the_receiver_cannot_read_waits_in_the_inbox_and_the_others_load(genuine, rx):
    g = genuine
    rx.deliver(g.first)
    locked = craft(rx, g.first, "locked", lambda doc: None)
    (locked / MANIFEST_NAME).chmod(0)
    with dg.instance_for_test() as instance:
        _, outcomes = evaluate(instance, rx.resources())
        assert run_results(outcomes)[g.first.manifest.backup_id] is True
    assert locked.is_dir() and not rx.quarantine.exists()
    assert ledger(rx.dsn) == {g.first.manifest.backup_id: "loaded"}


def test_names_and_keys_with_a_trailing_newline_are_refused(genuine):
    p = genuine.first
    assert parse_backup_id(p.manifest.backup_id) is not None
    assert parse_backup_id(p.manifest.backup_id + "\n") is None
    assert key_start("partial", p.manifest.partition_key) is not None
    assert key_start("partial", p.manifest.partition_key + "\n") is None
    doc = p.manifest.to_dict()
    doc["files"][0]["name"] += "\n"
    with pytest.raises(ManifestError, match="is not a safe relative file name"):
        Manifest.from_dict(doc)


def test_the_verdict_tells_a_broken_sender_from_settings_that_differ():
    """Partition fit, without a database: at fault (quarantined) versus refused (settings) and waits."""
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

    def verdict(key, start=None, minutes=5, kind="partial"):
        start = start or key_start(kind, key)
        window = (start, start + timedelta(minutes=minutes)) if start else None
        with dg.partition_loading_context(effective_dt=now):
            return fit(kind, key, window, max_ahead=300).verdict

    assert SHARED.partial_minutes == 5
    assert verdict("2026-11-20-11-50") == OK
    assert verdict("2026-11-20-11-55", minutes=10) == REFUSED  # ARB_PARTIAL_MINUTES differs
    assert verdict("2026-11-20-12-00") == WAITS  # ends 5 minutes ahead: the receiver is behind
    assert verdict("2026-11-20-12-05") == AT_FAULT  # ends 10 minutes ahead
    assert verdict("2026-11-20-11-53") == AT_FAULT  # off the grid its own length implies
    assert verdict("2026-11-20-11-50", start=now) == AT_FAULT  # window elsewhere than its key
    assert verdict("2026-11-20-11-50\n", start=now) == AT_FAULT
    assert verdict("2026-11-21", kind="complete", minutes=24 * 60) == AT_FAULT
    assert verdict("2026-11-19", kind="complete", minutes=24 * 60) == OK
