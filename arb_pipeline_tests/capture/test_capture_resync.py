"""A slot dropped by hand and recreated forces a resync (issue 18, the wiring slice): on a real
wal_level=logical sender, the captured partials read from the new slot wait on the receiver
(its load refuses them, its inbox sensor does not request them) until a complete taken after
the slot was recreated loads; the sender's slot sensor requests that complete; then every
table is at parity. The rule is capture/chain.py's."""

from __future__ import annotations

import dagster as dg
import pytest

from arb_pipeline.capture.chain import EPOCH, CapturedRange, epoch_of, gap_reason, resync_point, stamp_epoch
from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.setup import plan_setup, run_plan
from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.extract.captured import CaptureSource, publish_and_advance
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.apply import CaptureGapError
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.capture_mode import COMPLETE_BACKUP, PARTIAL_BACKUP, capture_metadata
from arb_pipeline.sender.capture_slot import RESYNC_TAG, make_capture_slot_sensor
from arb_pipeline.sender.definitions import defs as sender_defs
from arb_pipeline.sender.resources import SenderDatabase
from arb_pipeline.sender.schedules import complete_backup_job
from arb_pipeline.settings import CaptureSettings
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.alerts import mailer_for
from arb_pipeline_tests.support.backups import P, complete_for_yesterday, load, wide_window
from arb_pipeline_tests.support.capture import PUBLICATION, capture_sender, captured_partial
from arb_pipeline_tests.support.receiver import Receiver, tick
from arb_pipeline_tests.support.traffic import traffic

TOKEN = P + "activetoken"


def test_resync_point_and_gap_rule():
    a = CapturedRange("0/100", "0/200", "0/100")
    assert epoch_of("0/200", a) == "0/100"  # the chain holds
    assert epoch_of("0/150", a) == "0/100"  # re-read after a crash before the advance
    assert epoch_of("0/300", a) == "0/300"  # past the previous end: a recreated slot
    assert epoch_of("0/300", None) == "0/300"
    assert resync_point(a, parse_lsn("0/200"), "0/180") is None  # pinned after the epoch
    assert resync_point(a, parse_lsn("0/200"), "0/50") == parse_lsn("0/100")
    assert resync_point(a, parse_lsn("0/900"), "0/180") == parse_lsn("0/900")  # recreated, no partial yet
    assert resync_point(None, parse_lsn("0/900"), None) == parse_lsn("0/900")  # just set up
    assert resync_point(None, None, None) is None
    assert gap_reason(None, None, "x") is None  # built outside the assets: not checked
    assert gap_reason("0/100", "0/100", "x") is None
    reason = gap_reason("0/300", "0/100", "x")
    assert "0/300" in reason and "a complete taken after the slot was recreated heals it" in reason
    assert "is not an LSN" in gap_reason("nonsense", "0/100", "x")


@pytest.fixture
def sender(logical_pg_cluster, tmp_path):
    """(dsn, media, staging, slot): a seeded sender set up as `arb capture setup` does."""
    with capture_sender(logical_pg_cluster, tmp_path, seed=17) as world:
        yield world


def _partial(dsn, media, staging, slot, previous: CapturedRange | None, key: str | None = None):
    """A captured partial as the asset builds it (stamped with its epoch), published and
    advanced: of partition ``key``'s window, else of a window holding everything until now."""
    if key is None:
        window = wide_window()
        key = window.start.strftime("%Y-%m-%d-%H-%M")
    else:
        tw = PARTIAL.time_window_for_partition_key(key)
        window = Window(tw.start, tw.end)
    built = captured_partial(
        dsn, staging, media, CaptureSource(slot, PUBLICATION), window=window, key=key, sender_id="resync"
    )
    c = built.manifest.capture
    built = stamp_epoch(built, epoch_of(c.from_lsn, previous))
    publish_and_advance(LocalFolderTransport(staging.parent / "sent"), built, dsn)
    return built, CapturedRange(c.from_lsn, c.to_lsn, built.manifest.extra[EPOCH])


def _complete(dsn, media, staging):
    return complete_for_yesterday(dsn, staging, media, pin_to_slot=True)


def _record(instance, key: dg.AssetKey, built) -> None:
    """The sender asset's materialization of ``built`` (its metadata as the asset writes it)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            key, partition=built.manifest.partition_key, metadata=capture_metadata(built.manifest)
        )
    )


def _slot_sensor(instance, dsn, slot, smtp):
    sensor = make_capture_slot_sensor(
        CaptureSettings(slot, PUBLICATION, 1024), resync_job=complete_backup_job
    )
    context = dg.build_sensor_context(
        instance=instance,
        resources={"alert_mailer": mailer_for(smtp), "sender_db": SenderDatabase(dsn=dsn)},
        definitions=sender_defs,  # resolves the requested complete's partition
    )
    return sensor.evaluate_tick(context)


def test_a_slot_dropped_by_hand_and_recreated_forces_a_complete_before_partials_apply(
    sender, receiver_db, tmp_path, smtp_server
):
    from arb_pipeline.dev.generator.workload import Workload

    dsn, media, staging, slot = sender
    (tmp_path / "rx").mkdir()
    receiver = Receiver.under(receiver_db, tmp_path / "rx")
    instance = dg.DagsterInstance.ephemeral()
    with Workload(dsn, media, seed=17) as work:
        # Set up, no complete yet: the sensor asks for one; a partial would wait for it.
        requested = _slot_sensor(instance, dsn, slot, smtp_server).run_requests
        assert [r.job_name for r in requested] == [complete_backup_job.name]
        traffic(work, 60)
        first = _complete(dsn, media, staging)
        _record(instance, COMPLETE_BACKUP, first)
        assert load(receiver_db, first).outcome == "loaded"
        traffic(work, 80)
        p1, r1 = _partial(dsn, media, staging, slot, None)
        _record(instance, PARTIAL_BACKUP, p1)
        assert load(receiver_db, p1).outcome == "loaded"
        assert _slot_sensor(instance, dsn, slot, smtp_server).run_requests == []  # all well

        # The slot dropped by hand; changes meanwhile are in no partial; `arb capture setup` again.
        with connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        traffic(work, 40)
        work.mark_declined_broken()
        with connect(dsn) as conn:
            assert conn.execute(f'DELETE FROM "{TOKEN}" WHERE id % 3 = 0').rowcount > 0
            conn.commit()
        with connect(dsn, autocommit=True) as conn:
            run_plan(conn, plan_setup(conn, slot, PUBLICATION, current_catalog().table_names))
        requested = _slot_sensor(instance, dsn, slot, smtp_server).run_requests  # before any new partial
        assert [r.job_name for r in requested] == [complete_backup_job.name] and RESYNC_TAG in requested[
            0
        ].tags

        traffic(work, 60)
        # A partition the receiver knows (the last closed window): the inbox sensor considers it.
        p2, r2 = _partial(dsn, media, staging, slot, r1, PARTIAL.get_last_partition_key())
        _record(instance, PARTIAL_BACKUP, p2)
        assert r2.epoch == r2.from_lsn != r1.epoch  # a new epoch: the chain broke
        with pytest.raises(CaptureGapError, match="a complete taken after the slot was recreated heals it"):
            load(receiver_db, p2)
        receiver.deliver(p2)  # the inbox sensor does not request it: it waits, saying why
        requested = _slot_sensor(instance, dsn, slot, smtp_server).run_requests
        assert requested and requested[0].run_key == f"capture-resync-{r2.epoch}"
        with dg.instance_for_test() as rx:
            result, outcomes = tick(rx, receiver.resources())
            assert outcomes == [] and "heals it" in result.skip_reason.skip_message

            traffic(work, 40)
            second = _complete(dsn, media, staging)  # the complete the sensor asked for
            _record(instance, COMPLETE_BACKUP, second)
            assert _slot_sensor(instance, dsn, slot, smtp_server).run_requests == []
            receiver.deliver(second)
            result, outcomes = tick(rx, receiver.resources(), result.cursor)
            assert [r.job_name for r, _ in outcomes] == ["load_complete_job"] and outcomes[0][1].success
            result, outcomes = tick(rx, receiver.resources(), result.cursor)  # now p2 is requested
            assert [r.tags.get("arb/backup_id") for r, _ in outcomes] == [p2.manifest.backup_id]
            assert outcomes[0][1].success
        traffic(work, 40)
        work.mark_declined_broken()
        p3, _ = _partial(dsn, media, staging, slot, r2)
        assert p3.manifest.extra[EPOCH] == r2.epoch  # the new slot's chain holds
        assert load(receiver_db, p3).outcome == "loaded"
        report = compare_tables(dsn, receiver_db)  # every replicated table, the lost changes healed
        assert report.ok, report.format()
