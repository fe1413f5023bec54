"""Failure emails through a real SMTP server: one per failed run, throttled per job, with
job, partition, error and a link; each code location claims only its own runs."""

from __future__ import annotations

import time
from datetime import timedelta

import dagster as dg
import pytest

from arb_pipeline.dagster_common import alert_sensors
from arb_pipeline.dagster_common.alert_sensors import make_failure_alert_sensor
from arb_pipeline.errors import ConfigError
from arb_pipeline.ops.alerts import AlertError, FailedRun, Mailer, MailSettings, Throttle, parse_admins
from arb_pipeline.receiver.assets import load_complete, load_partial
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings
from arb_pipeline.receiver.sensors import load_complete_job, load_partial_job
from arb_pipeline.sender.assets import partial_backup
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher, SenderDatabase, SenderSettings
from arb_pipeline.sender.schedules import partial_backup_job
from arb_pipeline_tests.support.alerts import ADMINS, UI, Ticker, mailer_for

KEY = "2026-11-25-10-05"


def receiver_defs(receiver_db, tmp_path, mailer) -> dg.Definitions:
    return dg.Definitions(
        assets=[load_partial, load_complete],
        jobs=[load_partial_job, load_complete_job],
        sensors=[make_failure_alert_sensor("receiver")],
        resources={
            "receiver_db": ReceiverDatabase(dsn=receiver_db),
            "receiver_settings": ReceiverSettings(
                inbox_dir=str(tmp_path / "inbox"),
                media_dir=str(tmp_path / "media"),
                quarantine_dir=str(tmp_path / "q"),
                min_free_mb=0,
            ),
            "alert_mailer": mailer,
        },
    )


def fail_a_load(defs: dg.Definitions, instance, n: int) -> dg.DagsterRun:
    """A real load run that fails: the backup it is told to load is not in the inbox."""
    result = defs.resolve_job_def("load_partial_job").execute_in_process(
        instance=instance,
        partition_key=KEY,
        raise_on_error=False,
        run_config={"ops": {"load_partial": {"config": {"backup_ids": [f"partial-{KEY}-missing{n}"]}}}},
    )
    assert not result.success
    return result.dagster_run


def test_a_failed_run_emails_once_with_job_partition_error_and_link(smtp_server, receiver_db, tmp_path):
    mailer = mailer_for(smtp_server)
    defs = receiver_defs(receiver_db, tmp_path, mailer)
    sender_defs = dg.Definitions(  # the other code location, on the same instance (the demo)
        assets=[partial_backup],
        jobs=[partial_backup_job],
        sensors=[make_failure_alert_sensor("sender")],
        resources={
            "sender_db": SenderDatabase(dsn="x"),
            "sender_settings": SenderSettings(media_dir="m", staging_dir="s"),
            "backup_destination": BackupDestination(),
            "backup_publisher": BackupPublisher(destination=BackupDestination()),
            "alert_mailer": mailer,
        },
    )
    with dg.instance_for_test() as instance:
        receiver = Ticker(defs.resolve_sensor_def("receiver_failure_alerts"), instance, defs, mailer)
        sender = Ticker(
            sender_defs.resolve_sensor_def("sender_failure_alerts"), instance, sender_defs, mailer
        )
        receiver.tick(), sender.tick()
        assert smtp_server.messages == []
        run = fail_a_load(defs, instance, 1)
        sender.tick()  # not its run: the sender's sensor stays silent
        receiver.tick()
        receiver.tick()  # a second tick doesn't email the same failure again
        sender.tick()
    [msg] = smtp_server.messages
    assert msg.subject == f"[arb] receiver: load_partial_job failed partition {KEY}"
    assert set(msg.rcpt_tos) == set(ADMINS) and msg.mail_from == "arb@sender.example.org"
    body = msg.body
    assert "Job:        load_partial_job" in body and f"Partition:  {KEY}" in body
    assert f"Run:        {UI}/runs/{run.run_id}" in body
    assert f"backup partial-{KEY}-missing1 is not in the inbox" in body  # the error, not Dagster's wrapper


def test_repeated_failures_within_the_interval_email_once_more_after_it_with_the_count(
    smtp_server, receiver_db, tmp_path, monkeypatch
):
    interval_minutes = 10.0
    clock = [time.time()]  # the sensors' clock, moved past the interval instead of sleeping through it
    monkeypatch.setattr(alert_sensors, "now_seconds", lambda: clock[0])
    mailer = mailer_for(smtp_server, interval_minutes=interval_minutes)
    defs = receiver_defs(receiver_db, tmp_path, mailer)
    with dg.instance_for_test() as instance:
        ticker = Ticker(defs.resolve_sensor_def("receiver_failure_alerts"), instance, defs, mailer)
        ticker.tick()
        fail_a_load(defs, instance, 1)
        ticker.tick()
        assert len(smtp_server.messages) == 1
        second, third = fail_a_load(defs, instance, 2), fail_a_load(defs, instance, 3)
        ticker.tick()
        assert len(smtp_server.messages) == 1  # within the interval: counted, not sent
        clock[0] += interval_minutes * 60 - 1
        ticker.tick()
        assert len(smtp_server.messages) == 1  # still within it
        clock[0] += 2
        ticker.tick()  # the interval has passed: one email, with the count, though no new failure came
        ticker.tick()
    first, summary = smtp_server.messages
    assert "failed 2 more time(s); latest partition" in summary.subject
    assert "2 failure(s) of job load_partial_job were not emailed" in summary.body
    assert f"{UI}/runs/{third.run_id}" in summary.body and f"{UI}/runs/{second.run_id}" in summary.body
    assert f"partial-{KEY}-missing3 is not in the inbox" in summary.body


def test_throttle_counts_per_job():
    throttle = Throttle(interval=timedelta(minutes=10))
    run = lambda job, n: FailedRun(f"r{n}", job, "receiver", None, "boom", 1000.0 + n)  # noqa: E731
    assert throttle.offer("a", run("a", 1), 1000)[0]
    assert throttle.offer("b", run("b", 2), 1001)[0]  # another job has its own interval
    assert not throttle.offer("a", run("a", 3), 1002)[0]
    assert throttle.due(1500) == []
    [(job, latest, count, first, _)] = throttle.due(1601)
    assert (job, latest.run_id, count, first.run_id) == ("a", "r3", 1, "r3")
    restored = Throttle(timedelta(minutes=10), throttle.to_state())  # the cursor round-trips
    assert restored.due(1601)[0][2] == 1


def test_settings_and_a_relay_without_login(smtp_server):
    assert parse_admins("a@x.org; Bob <b@x.org>,") == ("a@x.org", "Bob <b@x.org>")
    with pytest.raises(ConfigError, match="ARB_ADMINS"):
        parse_admins("root")
    with pytest.raises(ConfigError, match="ARB_SMTP_SECURITY"):
        MailSettings.from_env({"ARB_SMTP_SECURITY": "tls"})
    relay = MailSettings(admins=("a@x.org",), host=smtp_server.host, port=smtp_server.port)
    Mailer(relay).send("[arb] test", "body")
    assert [m.subject for m in smtp_server.messages] == ["[arb] test"]
    with pytest.raises(AlertError, match="ARB_SMTP_USER"):  # the relay offers no AUTH
        Mailer(
            MailSettings(
                admins=("a@x.org",),
                host=smtp_server.host,
                port=smtp_server.port,
                user="arb",
                password="secret",
            )
        ).send("x", "y")
    with pytest.raises(AlertError, match="ARB_SMTP_HOST"):
        smtp_server.stop()
        Mailer(relay).send("x", "y")
