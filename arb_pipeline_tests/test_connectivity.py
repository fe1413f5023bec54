"""The sender's connectivity check against a real sshd: passes when the receiver is fine;
fails, and alerts, when sshd is stopped or its host key changed. `arb check` runs the
same preflight on either server and prints every setting with its status and fix."""

from __future__ import annotations

import dagster as dg
import pytest

from arb_pipeline.cli.main import main as arb
from arb_pipeline.dagster_common.alert_sensors import make_failure_alert_sensor
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.sender.connectivity import receiver_connectivity, receiver_connectivity_job
from arb_pipeline.sender.resources import BackupDestination
from arb_pipeline_tests.support.alerts import Ticker, mailer_for
from arb_pipeline_tests.support.services import sftp_destination

pytestmark = pytest.mark.sshd


def destination(sshd, **kw) -> BackupDestination:
    return sftp_destination(sshd, connect_timeout=5, **kw)


def check_defs(sshd, smtp, **kw) -> dg.Definitions:
    return dg.Definitions(
        assets=[receiver_connectivity],
        jobs=[receiver_connectivity_job],
        sensors=[make_failure_alert_sensor("sender")],
        resources={"backup_destination": destination(sshd, **kw), "alert_mailer": mailer_for(smtp)},
    )


def run_check_and_tick(defs, smtp):
    with dg.instance_for_test() as instance:
        ticker = Ticker(defs.resolve_sensor_def("sender_failure_alerts"), instance, defs, mailer_for(smtp))
        ticker.tick()
        result = defs.resolve_job_def("receiver_connectivity_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        ticker.tick()
    return result


def test_a_healthy_receiver_passes_with_numbers(sftp_inbox, smtp_server):
    result = run_check_and_tick(check_defs(sftp_inbox, smtp_server), smtp_server)
    assert result.success and smtp_server.messages == []
    [mat] = result.asset_materializations_for_node("sender__ops__receiver_connectivity")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["free_bytes"] > 0  # statvfs@openssh.com
    assert meta["connect_ms"] >= 0
    assert [c["name"] for c in meta["checks"]] == [
        "receiver reachable",
        "receiver host key",
        "remote folder writable",
        "remote free space",
    ]


def test_no_room_on_the_receiver_fails(sftp_inbox, smtp_server):
    result = run_check_and_tick(check_defs(sftp_inbox, smtp_server, min_free_mb=10**12), smtp_server)
    assert not result.success
    [msg] = smtp_server.messages
    assert "remote free space" in msg.body and "below ARB_REMOTE_MIN_FREE_MB" in msg.body


def test_a_stopped_sshd_fails_and_alerts(sftp_inbox, smtp_server):
    sftp_inbox.stop()
    try:
        result = run_check_and_tick(check_defs(sftp_inbox, smtp_server), smtp_server)
    finally:
        sftp_inbox.start()
    assert not result.success
    [msg] = smtp_server.messages
    assert "[arb] sender: receiver_connectivity_job failed" in msg.subject
    assert f"receiver reachable: no TCP connection to {sftp_inbox.host}:{sftp_inbox.port}" in msg.body
    assert "systemctl start ssh" in msg.body  # the fix


def test_a_changed_host_key_fails_and_alerts(sftp_inbox, smtp_server):
    sftp_inbox.regenerate_host_key(update_known_hosts=False)
    result = run_check_and_tick(check_defs(sftp_inbox, smtp_server), smtp_server)
    assert not result.success
    [msg] = smtp_server.messages
    assert "receiver host key: the host key of the SFTP server" in msg.body and "has CHANGED" in msg.body
    assert "ssh-keygen -lf" in msg.body


@pytest.fixture
def sender_env(monkeypatch, sftp_inbox, smtp_server, sender_db, tmp_path):
    (tmp_path / "media").mkdir()
    for name, value in {
        "ARB_SENDER_DSN": sender_db,
        "ARB_PG_DUMP": str(find_bin_dir() / "pg_dump"),
        "ARB_SENDER_MEDIA_DIR": str(tmp_path / "media"),
        "ARB_STAGING_DIR": str(tmp_path / "staging"),
        "ARB_TRANSPORT": "sftp",
        "ARB_SFTP_HOST": sftp_inbox.host,
        "ARB_SFTP_PORT": str(sftp_inbox.port),
        "ARB_SFTP_USER": sftp_inbox.username,
        "ARB_SFTP_KEY_FILE": str(sftp_inbox.client_key_path),
        "ARB_SFTP_KNOWN_HOSTS": str(sftp_inbox.known_hosts_path),
        "ARB_SFTP_REMOTE_DIR": sftp_inbox.remote_inbox,
        "ARB_REMOTE_MIN_FREE_MB": "1",
        "ARB_ADMINS": "ops@example.org",
        "ARB_SMTP_HOST": smtp_server.host,
        "ARB_SMTP_PORT": str(smtp_server.port),
        "ARB_UI_BASE_URL": "http://dagster.example.org",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("ARB_RECEIVER_DSN", raising=False)
    return sftp_inbox


def test_arb_check_on_the_sender_prints_each_setting_status_and_fix(sender_env, capsys):
    assert arb(["check"]) == 0
    out = capsys.readouterr().out
    for line in (
        "arb check: sender",
        "ok    ARB_SENDER_DSN",
        "migrations up to date",
        "ok    ARB_PG_DUMP",
        "ok    receiver host key",
        "ok    remote folder writable",
        "ok    remote free space",
        "ok    ARB_SMTP_HOST",
        "WARN  DAGSTER_HOME",
    ):
        assert line in out, out
    sender_env.regenerate_host_key(update_known_hosts=False)
    assert arb(["check", "--role", "sender"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  receiver host key" in out and "fix: compare the fingerprint" in out, out


def test_arb_check_on_the_receiver(monkeypatch, receiver_db, smtp_server, tmp_path, capsys):
    for sub in ("inbox", "media", "quarantine"):
        (tmp_path / sub).mkdir()
    monkeypatch.setenv("ARB_RECEIVER_DSN", receiver_db)
    monkeypatch.setenv("ARB_INBOX_DIR", str(tmp_path / "inbox"))
    monkeypatch.setenv("ARB_RECEIVER_MEDIA_DIR", str(tmp_path / "media"))
    monkeypatch.setenv("ARB_QUARANTINE_DIR", str(tmp_path / "quarantine"))
    monkeypatch.setenv("ARB_MIN_FREE_MB", "1")
    monkeypatch.setenv("ARB_PSQL", str(find_bin_dir() / "psql"))
    monkeypatch.setenv("ARB_SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("ARB_SMTP_PORT", str(smtp_server.port))
    for name in ("ARB_ADMINS", "ARB_DRILL_DSN", "ARB_SENDER_DSN"):
        monkeypatch.delenv(name, raising=False)
    assert arb(["check", "--json"]) == 1
    import json

    items = {i["name"]: i for i in json.loads(capsys.readouterr().out)["receiver"]}
    assert items["ARB_RECEIVER_DSN"]["status"] == "ok" and items["ARB_INBOX_DIR"]["status"] == "ok"
    assert items["ARB_ADMINS"]["status"] == "FAIL" and "ARB_ADMINS" in items["ARB_ADMINS"]["fix"]
    assert items["ARB_DRILL_DSN"]["status"] == "FAIL" and "CREATEDB" in items["ARB_DRILL_DSN"]["fix"]
