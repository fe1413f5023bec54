"""The inbox sensor through Dagster's own tick evaluation (``evaluate_tick``, which checks each
requested partition as the daemon does) when the backup's partition is not one the receiver
knows: a receiver clock behind the sender's (the backup waits), and a sender with another
``ARB_PARTIAL_MINUTES`` (the backup is refused with both settings named). In both the other
backups load in the same tick.

The receiver's clock is Dagster's partition-loading time (``dg.partition_loading_context``);
the sender's is the window its backup was built for. All windows are in the real past, so
the sender's extract needs no clock of its own.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest

from arb_pipeline.dagster_common.partitions import PARTIAL, SHARED, complete_partitions, partial_partitions
from arb_pipeline.extract.build import build_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.partition_fit import OK, REFUSED, WAITS, fit
from arb_pipeline_tests.support.backups import new_sender, partial_for
from arb_pipeline_tests.support.receiver import Receiver, evaluate
from arb_pipeline_tests.support.traffic import PARTIAL_OPS, traffic_at

UTC = timezone.utc


def _key(t: datetime) -> str:
    return PARTIAL.get_partition_key_for_timestamp(t.timestamp())


def _loaded(dsn: str) -> set[str]:
    with connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT backup_id FROM arb_loaded_backup").fetchall()}


@pytest.fixture
def setup(pg_cluster, receiver_db, tmp_path):
    assert SHARED.partial_minutes == 5, "these tests assume the default ARB_PARTIAL_MINUTES"
    dsn, media, staging = new_sender(pg_cluster, tmp_path, seed=14)
    rx = Receiver(receiver_db, tmp_path / "inbox", tmp_path / "rx-media", tmp_path / "quarantine")
    rx.media.mkdir()
    # Three 5-minute windows well in the past, the first on a 10-minute boundary.
    first = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60)
    first = first.replace(minute=first.minute - first.minute % 10)
    keys = [_key(first + timedelta(minutes=5 * i)) for i in range(3)]
    for i, key in enumerate(keys[:2]):
        traffic_at(
            dsn,
            media,
            14 + i,
            PARTIAL.start_time_for_partition_key(key) + timedelta(minutes=1),
            PARTIAL_OPS,
            30,
        )
    return dsn, media, staging, rx, keys


def test_a_backup_from_a_sender_whose_clock_is_ahead_waits_and_loads_later(setup, capsys):
    dsn, media, staging, rx, keys = setup
    built = [partial_for(dsn, staging, media, key, f"skew{i}") for i, key in enumerate(keys)]
    for b in built:
        rx.deliver(b)
    # The sender closed the third window a minute ago; the receiver's clock is 3 minutes behind.
    sender_now = PARTIAL.time_window_for_partition_key(keys[2]).end + timedelta(minutes=1)
    behind = sender_now - timedelta(minutes=3)
    resources = rx.resources()
    with dg.instance_for_test() as instance:
        capsys.readouterr()
        data, outcomes = evaluate(instance, resources, now=behind)
        [(ranged, _)] = outcomes  # the first two, adjacent: one run over their range
        assert (ranged.partition_key_range.start, ranged.partition_key_range.end) == tuple(keys[:2])
        assert all(res.success for _, res in outcomes)
        assert _loaded(rx.dsn) == {b.manifest.backup_id for b in built[:2]}
        wait = f"{built[2].manifest.backup_id} waits: partition {keys[2]} is not yet known to this receiver"
        log = capsys.readouterr().err  # the tick's log (the sensor's console logger)
        assert wait in log and "clock may be behind the sender's" in log

        # Nothing else is due: the tick says why the third one waits; no attempt is counted.
        again, outcomes = evaluate(instance, resources, data.cursor, now=behind)
        assert outcomes == [] and wait in again.skip_message
        assert built[2].manifest.backup_id not in (again.cursor or "")
        assert rx.folder(built[2]).is_dir() and not rx.quarantine.exists()

        # The receiver's clock catches up: the partition exists and the backup loads.
        later, outcomes = evaluate(instance, resources, again.cursor, now=sender_now)
        assert [(r.run_key, res.success) for r, res in outcomes] == [(built[2].manifest.backup_id, True)]
    assert _loaded(rx.dsn) == {b.manifest.backup_id for b in built}


def test_a_backup_made_with_another_partial_length_is_refused_and_the_others_load(setup, capsys):
    dsn, media, staging, rx, keys = setup
    good = [partial_for(dsn, staging, media, key, f"good{i}") for i, key in enumerate(keys[:2])]
    # A sender with ARB_PARTIAL_MINUTES=10: its key is also a 5-minute key, its window is not.
    start = PARTIAL.start_time_for_partition_key(keys[2]) + timedelta(minutes=5)
    start = start.replace(minute=start.minute - start.minute % 10)
    odd = build_partial(
        dsn,
        staging,
        partition_key=_key(start),
        window=Window(start, start + timedelta(minutes=10)),
        unique="ten",
        media_dir=media,
        sender_id="sender-with-10",
    )
    for b in (*good, odd):
        rx.deliver(b)
    resources = rx.resources()
    odd_id = odd.manifest.backup_id
    with dg.instance_for_test() as instance:
        capsys.readouterr()
        data, outcomes = evaluate(instance, resources)
        assert [r.run_key for r, _ in outcomes] == [
            f"{good[0].manifest.backup_id}..{good[1].manifest.backup_id}"
        ]
        assert all(res.success for _, res in outcomes)
        refusal = f"{odd_id} refused: made with ARB_PARTIAL_MINUTES=10"
        log = capsys.readouterr().err  # the tick's log (the sensor's console logger)
        assert "this receiver has ARB_PARTIAL_MINUTES=5" in log and log.count(refusal) == 1

        again, outcomes = evaluate(instance, resources, data.cursor)
        assert outcomes == [] and refusal in again.skip_message
        assert "ARB_PARTIAL_MINUTES=5" in again.skip_message
        assert refusal not in capsys.readouterr().err  # the error is logged once per backup
    assert _loaded(rx.dsn) == {b.manifest.backup_id for b in good}
    # Left in the inbox, not quarantined: the settings are at fault, not the backup.
    assert rx.folder(odd).is_dir() and not rx.quarantine.exists()


def test_the_verdict_names_the_setting_the_servers_disagree_on():
    """Each way a backup can miss this receiver's partitions, without a database: a receiver
    with 10-minute partials and go-live on 2026-11-10."""
    rx = replace(SHARED, partial_minutes=10, go_live=datetime(2026, 11, 10, tzinfo=UTC))
    partial, complete = partial_partitions(rx), complete_partitions(rx)

    def verdict(kind, key, minutes=None, now=datetime(2026, 11, 20, tzinfo=UTC)):
        start = datetime.strptime(key, "%Y-%m-%d-%H-%M" if kind == "partial" else "%Y-%m-%d")
        start = start.replace(tzinfo=UTC)
        window = (start, start + timedelta(minutes=minutes)) if minutes else None
        with dg.partition_loading_context(effective_dt=now):
            got = fit(kind, key, window, shared=rx, partitions=partial if kind == "partial" else complete)
        return got.verdict, got.reason

    assert verdict("partial", "2026-11-12-08-10", 10) == (OK, "")
    made_with_5 = verdict("partial", "2026-11-12-08-10", 5)
    assert made_with_5[0] == REFUSED and "ARB_PARTIAL_MINUTES=5" in made_with_5[1]
    assert "this receiver has ARB_PARTIAL_MINUTES=10" in made_with_5[1]
    off_grid = verdict("partial", "2026-11-12-08-05")  # from the folder name only
    assert off_grid[0] == REFUSED and "not on this receiver's 10-minute grid" in off_grid[1]
    early = verdict("partial", "2026-11-02-08-10", 10)
    assert early[0] == REFUSED and "the sender's ARB_GO_LIVE is at or before 2026-11-02-08-10" in early[1]
    assert "this receiver has ARB_GO_LIVE=2026-11-10-00-00" in early[1]
    assert verdict("complete", "2026-11-09", 24 * 60) == (OK, "")  # the day before go-live: the baseline
    early_complete = verdict("complete", "2026-11-08", 24 * 60)
    assert early_complete[0] == REFUSED and "ARB_GO_LIVE=2026-11-10-00-00" in early_complete[1]
    assert "the sender's ARB_GO_LIVE is at or before 2026-11-09" in early_complete[1]
    ahead = verdict("partial", "2026-11-20-00-00", 10, now=datetime(2026, 11, 20, 0, 7, tzinfo=UTC))
    assert ahead == (
        WAITS,
        "partition 2026-11-20-00-00 is not yet known to this receiver; its clock may be behind the sender's",
    )
    assert verdict("partial", "2026-11-20-00-00", 10, now=datetime(2026, 11, 20, 0, 10, tzinfo=UTC))[0] == OK


def test_an_unreadable_backup_named_for_a_future_partition_waits_then_its_run_quarantines_it(
    receiver_db, tmp_path
):
    rx = Receiver(receiver_db, tmp_path / "inbox", tmp_path / "rx-media", tmp_path / "quarantine")
    rx.media.mkdir()
    key = _key(datetime.now(UTC) - timedelta(minutes=30))
    folder = rx.inbox / "partial" / f"partial-{key}-garbled"
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_bytes(b"{not json")
    end = PARTIAL.time_window_for_partition_key(key).end
    resources = rx.resources()
    with dg.instance_for_test() as instance:
        data, outcomes = evaluate(instance, resources, now=end - timedelta(minutes=2))
        assert outcomes == [] and folder.is_dir()  # no run yet: its partition doesn't exist
        _, outcomes = evaluate(instance, resources, data.cursor, now=end + timedelta(minutes=1))
        assert [(r.partition_key, res.success) for r, res in outcomes] == [(key, False)]
    assert not folder.exists() and (rx.quarantine / "partial" / folder.name).is_dir()
