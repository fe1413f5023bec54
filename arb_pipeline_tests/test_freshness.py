"""Freshness: policies on the sender's dumps and the receiver's loaded tables, and our
sensor's emails when a stalled receiver goes stale and when it recovers."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg

from arb_pipeline.dagster_common.alert_sensors import freshness_targets, make_freshness_alert_sensor
from arb_pipeline.extract.build import publish
from arb_pipeline.ops.alerts import FreshnessTracker
from arb_pipeline.receiver.assets import load_partial
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.alerts import UI, Ticker, mailer_for
from arb_pipeline_tests.support.backups import new_sender, partial_for

KEY = "2026-11-25-10-05"


def test_policies_on_dumps_and_loaded_tables_and_sensors_in_both_locations():
    from arb_pipeline.receiver.definitions import defs as receiver
    from arb_pipeline.sender.definitions import defs as sender

    targets = {**freshness_targets(sender.assets), **freshness_targets(receiver.assets)}
    for side in ("sender", "receiver"):
        assert targets[dg.AssetKey([side, "partial", "report"])] == timedelta(
            minutes=15
        )  # 3 x 5-minute cadence
        assert targets[dg.AssetKey([side, "complete", "busstop"])] == timedelta(hours=26)
        assert targets[dg.AssetKey([side, "partial", "media"])] == timedelta(minutes=15)
    spec = next(
        s
        for a in sender.assets
        for s in getattr(a, "specs", ())
        if s.key.path == ["sender", "partial", "backup"]
    )
    assert spec.freshness_policy.warn_window.to_timedelta() == timedelta(minutes=10)
    for defs, location in ((sender, "sender"), (receiver, "receiver")):
        for name in (f"{location}_failure_alerts", f"{location}_freshness_alerts"):
            assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_tracker_reports_transitions_only():
    tracker = FreshnessTracker()
    assert tracker.evaluate({"a": (100.0, 10), "b": (None, 10)}, now=105) == ([], [])
    stale, _ = tracker.evaluate(
        {"a": (100.0, 10), "b": (None, 10)}, now=116
    )  # b: never materialized since 105
    assert [s.key for s in stale] == ["a", "b"]
    assert tracker.evaluate({"a": (100.0, 10), "b": (None, 10)}, now=130) == ([], [])
    again = FreshnessTracker(tracker.to_state())  # the cursor round-trips
    _, recovered = again.evaluate({"a": (125.0, 10), "b": (None, 10)}, now=130)
    assert [r.key for r in recovered] == ["a"]


def test_a_stalled_receiver_emails_stale_then_recovered(smtp_server, pg_cluster, receiver_db, tmp_path):
    window = 6.0  # well above one load run on a loaded machine, so the ticks after it see it fresh
    watched = [dg.AssetKey(["receiver", "partial", t]) for t in ("report", "eventforbusv2")]
    sensor = make_freshness_alert_sensor("receiver", {k: timedelta(seconds=window) for k in watched})
    mailer = mailer_for(smtp_server)
    resources = {
        "receiver_db": ReceiverDatabase(dsn=receiver_db),
        "receiver_settings": ReceiverSettings(
            inbox_dir=str(tmp_path / "inbox"),
            media_dir=str(tmp_path),
            quarantine_dir=str(tmp_path / "q"),
            min_free_mb=0,
        ),
    }
    defs = dg.Definitions(sensors=[sensor], resources={"alert_mailer": mailer})
    (tmp_path / "sender").mkdir()
    dsn, media, staging = new_sender(pg_cluster, tmp_path / "sender", seed=5)
    inbox = LocalFolderTransport(tmp_path / "inbox")
    backups = [partial_for(dsn, staging, media, KEY, f"fresh{i}") for i in range(2)]
    with dg.instance_for_test() as instance:

        def load_run():  # a real load run of the receiver, of the next backup of KEY
            publish(inbox, backups.pop(0))
            assert dg.materialize(
                [load_partial], partition_key=KEY, instance=instance, resources=resources
            ).success

        ticker = Ticker(sensor, instance, defs, mailer)
        load_run()
        ticker.tick()
        assert smtp_server.messages == []  # fresh
        time.sleep(window + 0.3)  # the receiver stalls
        ticker.tick()
        ticker.tick()  # still stale: no second email
        assert len(smtp_server.messages) == 1
        load_run()  # loads resume
        ticker.tick()
        ticker.tick()
    stale, recovered = smtp_server.messages
    assert stale.subject.strip().startswith(
        "[arb] receiver: STALE receiver/partial/eventforbusv2, receiver/partial/report"
    )
    assert "have not been materialized within their freshness window" in stale.body
    assert f"{UI}/assets/receiver/partial/report" in stale.body and "window 6 s" in stale.body
    assert recovered.subject.strip().startswith("[arb] receiver: recovered receiver/partial/eventforbusv2")
    assert "fresh again" in recovered.body
