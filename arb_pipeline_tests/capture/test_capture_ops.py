"""The capture slot's operations on a real PostgreSQL (issue 18, item 4): `arb capture
setup|drop|status` and `arb check` through the real CLI, and the sender's slot alert sensor
evaluated by Dagster, emailing a real SMTP server: setup's dry run changes nothing, setup is
idempotent and refuses a wal_level=replica server with the fix, lag shows and alerts past the
threshold, a really lost slot alerts with the fix and setup recreates it, drop frees the slot."""

from __future__ import annotations

import json
import re
import uuid

import dagster as dg
import pytest

from arb_pipeline.capture.alert import due_alert
from arb_pipeline.capture.health import LOST_FIX, slot_health
from arb_pipeline.capture.slot import SlotStatus
from arb_pipeline.catalog import current_catalog
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.capture_slot import make_capture_slot_sensor
from arb_pipeline.sender.resources import SenderDatabase
from arb_pipeline.settings import CaptureSettings
from arb_pipeline_tests.support.alerts import mailer_for
from arb_pipeline_tests.support.existing import arb

POSITION = current_catalog().prefix + "devicepositionintime"


@pytest.fixture
def names():
    """A slot and publication of the test's own: slots are cluster-wide."""
    tag = uuid.uuid4().hex[:10]
    yield f"arb_ops_{tag}", f"arb_pub_{tag}"


def _env(dsn: str, slot: str, publication: str, max_lag_mb: str = "1024") -> dict:
    return {
        "ARB_SENDER_DSN": dsn,
        "ARB_CAPTURE_SLOT": slot,
        "ARB_CAPTURE_PUBLICATION": publication,
        "ARB_CAPTURE_MAX_LAG_MB": max_lag_mb,
    }


def _state(dsn: str, slot: str, publication: str):
    """(the slot's plugin and wal_status or None, the publication's tables or None)."""
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT plugin, wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        published = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone()
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s", (publication,)
            )
        }
    return row, (tables if published else None)


def _drop_leftovers(dsn: str, slot: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )


def _capture_items(env: dict) -> list[dict]:
    done = arb("check", "--role", "sender", "--no-remote", "--json", env=env, timeout=180)
    items = json.loads(done.stdout)["sender"]
    return [i for i in items if i["name"] in ("ARB_CAPTURE_SLOT", "max_slot_wal_keep_size")]


def _write_positions(dsn: str, rows: int) -> None:
    with connect(dsn) as conn:
        conn.execute(
            f'INSERT INTO "{POSITION}" (longitude, latitude, "timeStamp", "phoneId") '
            "SELECT g, g, now(), gen_random_uuid() FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.commit()


def _lag_mb(status_output: str) -> float:
    return float(re.search(r"lag ([\d,.]+) MB", status_output).group(1).replace(",", ""))


def _reason(result) -> str:
    return result.skip_message


def _sensor_tick(dsn: str, slot: str, publication: str, max_lag_mb: float, smtp, cursor=None):
    """One tick through Dagster's own evaluation, as the daemon runs it, with the previous tick's cursor."""
    sensor = make_capture_slot_sensor(CaptureSettings(slot, publication, max_lag_mb))
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor=cursor,
        resources={"alert_mailer": mailer_for(smtp), "sender_db": SenderDatabase(dsn=dsn)},
    )
    return sensor.evaluate_tick(context)


def test_setup_dry_run_changes_nothing_setup_creates_twice_is_fine_and_drop_frees(logical_sender_db, names):
    dsn, (slot, publication) = logical_sender_db, names
    env = _env(dsn, slot, publication)
    try:
        assert _capture_items(env) == []  # capture never set up: arb check says nothing of it
        [missing] = _capture_items({**env, "ARB_PARTIAL_SOURCE": "capture"})  # unless partials need it
        assert missing["status"] == "FAIL" and "arb capture setup" in missing["fix"], missing

        dry = arb("capture", "setup", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert _state(dsn, slot, publication) == (None, None)  # nothing changed
        sql = [line for line in dry.stdout.splitlines() if not line.startswith("--")]
        assert sql[0].startswith(f'CREATE PUBLICATION "{publication}" FOR TABLE "public".')
        assert sql[1] == f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');"
        assert "-- recommended: max_slot_wal_keep_size is -1" in dry.stdout  # advice, not a refusal

        done = arb("capture", "setup", env=env)
        assert done.returncode == 0, done.stderr
        assert [line for line in done.stdout.splitlines() if not line.startswith("--")] == sql  # what it said
        slot_row, tables = _state(dsn, slot, publication)
        assert slot_row == ("pgoutput", "reserved") and tables == set(current_catalog().table_names)

        again = arb("capture", "setup", env=env)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

        _write_positions(dsn, 2000)
        dry_drop = arb("capture", "drop", "--dry-run", env=env)
        assert dry_drop.returncode == 0 and f"SELECT pg_drop_replication_slot('{slot}');" in dry_drop.stdout
        assert _state(dsn, slot, publication)[0] is not None  # the dry run kept it
        dropped = arb("capture", "drop", env=env)
        assert dropped.returncode == 0, dropped.stderr
        assert _state(dsn, slot, publication) == (None, None)  # the slot holds no WAL any more
        assert "nothing to do" in arb("capture", "drop", env=env).stdout
        status = arb("capture", "status", env=env)
        assert status.returncode == 0 and "does not exist" in status.stdout
    finally:
        _drop_leftovers(dsn, slot)


def test_setup_on_a_wal_level_replica_server_names_the_fix_and_changes_nothing(sender_db, names):
    slot, publication = names
    for args in (("--dry-run",), ()):
        done = arb("capture", "setup", *args, env=_env(sender_db, slot, publication))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "-- problem: wal_level is 'replica'" in done.stdout
        assert "ALTER SYSTEM SET wal_level = logical" in done.stdout and "restart" in done.stdout
        assert "nothing run" in done.stdout
        assert _state(sender_db, slot, publication) == (None, None)


def test_lag_grows_in_status_and_check_and_past_the_threshold_alerts(logical_sender_db, names, smtp_server):
    dsn, (slot, publication) = logical_sender_db, names
    threshold = 0.5  # MB
    env = _env(dsn, slot, publication, str(threshold))
    # no slot yet: the sensor does nothing
    result = _sensor_tick(dsn, slot, publication, threshold, smtp_server)
    assert "nothing to watch" in _reason(result) and smtp_server.messages == []
    try:
        assert arb("capture", "setup", env=env).returncode == 0
        before = arb("capture", "status", env=env)
        assert before.returncode == 0, before.stdout
        assert "wal_status reserved" in before.stdout and "not active" in before.stdout
        assert "recommended: max_slot_wal_keep_size is -1" in before.stdout
        assert "ALTER SYSTEM SET max_slot_wal_keep_size = '10GB'" in before.stdout
        items = _capture_items(env)
        assert [(i["name"], i["status"]) for i in items] == [
            ("ARB_CAPTURE_SLOT", "ok"),
            ("max_slot_wal_keep_size", "WARN"),
        ]
        assert "lag" in items[0]["detail"] and "retained WAL" in items[0]["detail"]
        quiet = _sensor_tick(dsn, slot, publication, threshold, smtp_server)
        assert smtp_server.messages == [] and f"replication slot {slot}: lag" in _reason(quiet)

        _write_positions(dsn, 20_000)
        after = arb("capture", "status", env=env)
        assert after.returncode == 1 and _lag_mb(after.stdout) > max(_lag_mb(before.stdout), threshold)
        assert "past ARB_CAPTURE_MAX_LAG_MB (0.5 MB)" in after.stdout and "arb capture drop" in after.stdout
        items = _capture_items(env)
        assert {i["status"] for i in items if i["name"] == "ARB_CAPTURE_SLOT"} == {"FAIL"}
        assert any(
            "unread WAL (lag)" in i["detail"] and "ARB_CAPTURE_MAX_LAG_MB" in i["detail"] for i in items
        )

        alerted = _sensor_tick(dsn, slot, publication, threshold, smtp_server, quiet.cursor)
        (mail,) = smtp_server.messages
        body = mail.message.get_content()
        assert slot in mail.message["Subject"] and "lag" in mail.message["Subject"]
        assert "MB of unread WAL (lag), past ARB_CAPTURE_MAX_LAG_MB (0.5 MB)" in body
        assert "Fix: find why capture stopped reading" in body and "wal_status reserved" in body
        _sensor_tick(dsn, slot, publication, threshold, smtp_server, alerted.cursor)
        assert len(smtp_server.messages) == 1  # the same problem within the alert interval: once
    finally:
        _drop_leftovers(dsn, slot)


def test_a_really_lost_slot_alerts_with_the_fix_and_setup_recreates_it(logical_sender_db, names, smtp_server):
    dsn, (slot, publication) = logical_sender_db, names
    env = _env(dsn, slot, publication)
    assert arb("capture", "setup", env=env).returncode == 0
    with connect(dsn, autocommit=True) as conn:
        # ALTER SYSTEM: the cluster's setting for this test's length (slots are cluster-wide)
        conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        conn.execute("SELECT pg_reload_conf()")
        try:
            _wait_for(conn, "max_slot_wal_keep_size", "1MB")
            for _ in range(4):  # new WAL segments, each past the slot's restart position
                _write_positions(dsn, 10)
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")  # removes the old segments and invalidates the slot
            assert _state(dsn, slot, publication)[0] == ("pgoutput", "lost")

            result = _sensor_tick(dsn, slot, publication, 1024, smtp_server)
            (mail,) = smtp_server.messages
            assert f"capture slot {slot}: lost" in mail.message["Subject"]
            body = mail.message.get_content()
            assert f"replication slot {slot} is lost" in body and LOST_FIX in body
            assert (
                "Fix: the slot was invalidated; run `arb capture setup` to recreate it and materialize a "
                in body
            )
            status = arb("capture", "status", env=env)
            assert status.returncode == 1 and "wal_status lost" in status.stdout and LOST_FIX in status.stdout
            (item,) = _capture_items(env)  # 1MB is set: no max_slot_wal_keep_size warning
            assert item["status"] == "FAIL" and "is lost" in item["detail"] and item["fix"] == LOST_FIX

            dry = arb("capture", "setup", "--dry-run", env=env)
            assert dry.returncode == 0 and f"-- drop the lost slot {slot}" in dry.stdout
            assert _state(dsn, slot, publication)[0] == ("pgoutput", "lost")
        finally:
            conn.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            conn.execute("SELECT pg_reload_conf()")
        try:
            _wait_for(conn, "max_slot_wal_keep_size", "-1")
            done = arb("capture", "setup", env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "materialize a complete" in done.stdout
            assert _state(dsn, slot, publication)[0] == ("pgoutput", "reserved")
            _sensor_tick(dsn, slot, publication, 1024, smtp_server, result.cursor)
            assert "is healthy again" in smtp_server.messages[-1].message["Subject"]
        finally:
            _drop_leftovers(dsn, slot)


def _wait_for(conn, name: str, value: str) -> None:
    import time

    deadline = time.monotonic() + 10
    while conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.05)


def test_an_alert_repeats_each_interval_while_the_problem_lasts():
    lost = slot_health(SlotStatus("s", True, wal_status="lost", lag_bytes=5), True, 1.0)
    alert, state = due_alert({}, lost, now=1000.0, interval_seconds=3600)
    assert alert and LOST_FIX in alert.body
    assert due_alert(state, lost, now=2000.0, interval_seconds=3600)[0] is None
    assert due_alert(state, lost, now=5000.0, interval_seconds=3600)[0] is not None
    fine = slot_health(
        SlotStatus("s", True, wal_status="reserved", lag_bytes=5, retained_wal_bytes=5), True, 1.0
    )
    assert "healthy again" in due_alert(state, fine, now=2000.0, interval_seconds=3600)[0].subject
    assert due_alert({}, fine, now=2000.0, interval_seconds=3600)[0] is None


def test_the_sender_location_runs_the_slot_sensor_with_its_settings():
    from arb_pipeline.sender.definitions import defs

    sensor = defs.resolve_sensor_def("capture_slot_alerts")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "ARB_CAPTURE_MAX_LAG_MB (1024 MB)" in sensor.description  # the setting's default
