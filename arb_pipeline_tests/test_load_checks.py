"""Checks after loads, without a connection to the sender: parity of completes against the
digests of the backup's table files (or the manifest's sender fingerprints, when it has
them), rows applied for partials; as asset checks that fail the run."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest

from arb_pipeline.dagster_common.alert_sensors import make_failure_alert_sensor
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.checks import check_complete, check_partial
from arb_pipeline.package.manifest import Manifest, ManifestError
from arb_pipeline.pg.connect import connect
from arb_pipeline.pg.rowhash import table_fingerprint
from arb_pipeline.receiver.assets import load_complete
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings
from arb_pipeline_tests.support.alerts import Ticker, mailer_for
from arb_pipeline_tests.support.backups import (
    PARTIAL_TABLES,
    P,
    complete_for_yesterday,
    load,
    make_partial,
    seeded_sender,
)
from arb_pipeline_tests.support.traffic import traffic


@pytest.fixture
def sender(sender_db, tmp_path):
    with seeded_sender(sender_db, tmp_path, seed=7) as world:
        yield world


def _traffic(work, n=100):
    traffic(work, n)


def _first_id(dsn, table, where="true"):
    with connect(dsn) as conn:
        return conn.execute(f'SELECT min(id) FROM "{table}" WHERE {where}').fetchone()[0]


def _execute(dsn, statement, params=()):
    with connect(dsn) as conn:
        conn.execute(statement, params)
        conn.commit()


def test_complete_manifest_carries_the_snapshots_fingerprints(sender, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    built = complete_for_yesterday(dsn, tmp_path / "s", media, fingerprints=True)
    files = built.manifest.table_files()
    assert files and all(f.fingerprint is not None and f.fingerprint.rows == f.rows for f in files)
    with connect(dsn) as conn:  # no traffic since: the live tables still equal the snapshot
        for f in files:
            fp = table_fingerprint(conn, f.table, [c.name for c in f.columns], f.primary_key)
            assert (fp.rows, fp.digest) == (f.fingerprint.rows, f.fingerprint.digest), f.table
    # strict parser: a fingerprint must be well-formed and agree with the file's row count
    doc = built.manifest.to_dict()
    assert Manifest.from_dict(doc) == built.manifest
    entry = next(f for f in doc["files"] if f["kind"] == "table")
    entry["fingerprint"]["rows"] += 1
    with pytest.raises(ManifestError, match="fingerprint"):
        Manifest.from_dict(doc)
    entry["fingerprint"].update(rows=entry["rows"], digest="xyz")
    with pytest.raises(ManifestError, match="digest"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize("sender_digests", [False, True], ids=["file-digests", "sender-digests"])
def test_complete_parity_passes_then_a_tampered_row_fails_with_its_key(
    sender, receiver_db, tmp_path, sender_digests
):
    """By default the manifest carries no sender digest: the load digests each staged table
    file and the check compares the table with that; a manifest with the sender's digests
    (ARB_COMPLETE_FINGERPRINTS=1, or an older sender) is checked against those."""
    dsn, media, work = sender
    _traffic(work)
    built = complete_for_yesterday(dsn, tmp_path / "s", media, fingerprints=sender_digests)
    files = built.manifest.table_files()
    assert all((f.fingerprint is not None) == sender_digests for f in files)
    result = load(receiver_db, built)
    assert all((t.fingerprint is None) == sender_digests for t in result.tables)
    checks = check_complete(receiver_db, built.staged.root, built.manifest, result)
    assert set(checks) == {f.table for f in files}
    assert all(c.passed for c in checks.values()), [c.description for c in checks.values() if not c.passed]
    assert checks[P + "busstop"].metadata["method"] == "fingerprint"  # one aggregate query, no staging
    source = "the sender's snapshot" if sender_digests else "the backup's table file"
    assert source in checks[P + "busstop"].description

    stop = _first_id(receiver_db, P + "busstop")
    _execute(receiver_db, f"UPDATE \"{P}busstop\" SET name = name || ' (edited)' WHERE id = %s", (stop,))
    report = _first_id(receiver_db, P + "report")
    _execute(receiver_db, f'DELETE FROM "{P}report" WHERE id = %s', (report,))
    checks = check_complete(receiver_db, built.staged.root, built.manifest, result)
    bad = {t: c for t, c in checks.items() if not c.passed}
    assert set(bad) == {P + "busstop", P + "report"}
    assert f"id={stop} changed (name)" in bad[P + "busstop"].description
    assert bad[P + "busstop"].first_keys[0] == {
        "table": P + "busstop",
        "kind": "changed",
        "key": {"id": stop},
        "columns": ["name"],
    }
    assert f"id={report} missing on receiver" in bad[P + "report"].description
    # a re-check of a backup loaded earlier has no load figures: the files are staged and compared
    again = load(receiver_db, built)
    assert again.outcome == "already loaded" and not again.tables
    checks = check_complete(receiver_db, built.staged.root, built.manifest, again)
    assert {t for t, c in checks.items() if not c.passed} == {P + "busstop", P + "report"}
    assert f"id={stop} changed (name)" in checks[P + "busstop"].description
    assert f"id={report} missing on receiver" in checks[P + "report"].description


def test_a_complete_that_loaded_wrong_fails_parity_without_sender_digests(sender, receiver_db, tmp_path):
    """With the defaults no sender digest travels: a load that went wrong (a row lost and one
    changed between staging and the end of the load) is still caught, by the digests the
    load took of the backup's own table files, and the keys are named."""
    dsn, media, work = sender
    _traffic(work)
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    assert all(f.fingerprint is None for f in built.manifest.table_files())
    result = load(receiver_db, built)
    # what a faulty merge would leave: a row of the file missing, another with a wrong value
    event = _first_id(receiver_db, P + "eventforbusv2")
    stop = _first_id(receiver_db, P + "busstop")
    with connect(receiver_db) as conn:
        conn.execute("SET session_replication_role = replica")  # past the FKs, as a stray write would
        conn.execute(f'DELETE FROM "{P}eventforbusv2" WHERE id = %s', (event,))
        conn.execute(f'UPDATE "{P}busstop" SET longitude = longitude + 0.001 WHERE id = %s', (stop,))
        conn.commit()
    checks = check_complete(receiver_db, built.staged.root, built.manifest, result)
    bad = {t: c for t, c in checks.items() if not c.passed}
    assert set(bad) == {P + "eventforbusv2", P + "busstop"}
    assert bad[P + "busstop"].metadata["digest_of_file"] == result_digest(result, P + "busstop")
    assert f"id={stop} changed (longitude)" in bad[P + "busstop"].description
    assert f"id={event} missing on receiver" in bad[P + "eventforbusv2"].description
    assert bad[P + "eventforbusv2"].first_keys[0]["key"] == {"id": event}
    assert "differs from the backup's table file" in bad[P + "eventforbusv2"].description


def result_digest(result, table):
    return next(t.fingerprint.digest for t in result.tables if t.table == table)


def test_rows_newer_partials_wrote_are_left_out_of_parity(sender, receiver_db, tmp_path):
    """A partial taken after the complete but loaded before it: its rows are newer than the
    snapshot, so they differ from it by right; the rest must still equal it."""
    dsn, media, work = sender
    _traffic(work)
    complete = complete_for_yesterday(dsn, tmp_path / "s", media)
    since = work.app_now()
    _traffic(work)  # new events, and votes that update events of the first batch
    partial = make_partial(dsn, tmp_path / "s", media, Window(since, since + timedelta(hours=1)))
    load(receiver_db, partial)
    result = load(receiver_db, complete)
    checks = check_complete(receiver_db, complete.staged.root, complete.manifest, result)
    assert all(c.passed for c in checks.values()), [c.description for c in checks.values() if not c.passed]
    newer = {
        t: c.metadata["newer_rows_left_out"] for t, c in checks.items() if c.metadata["newer_rows_left_out"]
    }
    assert set(newer) & set(PARTIAL_TABLES)
    table = next(t for t in PARTIAL_TABLES if t in newer)
    assert checks[table].metadata["method"] == "staged"
    # tamper a row the complete wrote (not one of the newer ones): named
    key = _first_id(receiver_db, table, f"arb_synced_at <= '{complete.manifest.snapshot_time.isoformat()}'")
    _execute(
        receiver_db,
        f'UPDATE "{table}" SET "timeStamp" = "timeStamp" + interval \'1 second\' WHERE id = %s',
        (key,),
    )
    checks = check_complete(receiver_db, complete.staged.root, complete.manifest, result)
    assert [t for t, c in checks.items() if not c.passed] == [table]
    assert f"id={key} changed (timeStamp)" in checks[table].description


def test_partial_rows_applied_and_a_missing_row_is_named(sender, receiver_db, tmp_path):
    dsn, media, work = sender
    _traffic(work)
    partial = make_partial(dsn, tmp_path / "s", media)
    result = load(receiver_db, partial)
    checks = check_partial(receiver_db, partial.staged.root, partial.manifest, result, shown=PARTIAL_TABLES)
    assert set(checks) == set(PARTIAL_TABLES) and all(c.passed for c in checks.values())
    report = checks[P + "report"].metadata
    assert report["rows_applied"] == report["rows_in_manifest"] > 0
    gone = _first_id(receiver_db, P + "busv2")  # an FK parent the partial carried for eventforbusv2
    with connect(receiver_db) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass the FK, as a stray hand edit would
        conn.execute(f'DELETE FROM "{P}busv2" WHERE id = %s', (gone,))
        conn.commit()
    checks = check_partial(receiver_db, partial.staged.root, partial.manifest, result, shown=PARTIAL_TABLES)
    bad = checks[P + "eventforbusv2"]
    assert (
        not bad.passed
        and f"id={gone} missing on receiver" in bad.description
        and P + "busv2" in bad.description
    )
    assert checks[P + "report"].passed
    complete = complete_for_yesterday(
        dsn, tmp_path / "s", media
    )  # a newer complete: the old partial is not re-checked
    load(receiver_db, complete)
    checks = check_partial(receiver_db, partial.staged.root, partial.manifest, result, shown=PARTIAL_TABLES)
    assert all(
        c.passed and f"superseded by complete {complete.manifest.backup_id}" in c.description
        for c in checks.values()
    )


def test_parity_is_an_asset_check_that_fails_the_load_run_and_alerts(
    sender, receiver_db, tmp_path, smtp_server
):
    dsn, media, work = sender
    _traffic(work, 60)
    built = complete_for_yesterday(dsn, tmp_path / "s", media)
    inbox = tmp_path / "inbox"
    (inbox / "complete").mkdir(parents=True)
    built.staged.root.rename(inbox / "complete" / built.manifest.backup_id)
    (tmp_path / "rmedia").mkdir()
    resources = {
        "receiver_db": ReceiverDatabase(dsn=receiver_db),
        "receiver_settings": ReceiverSettings(
            inbox_dir=str(inbox),
            media_dir=str(tmp_path / "rmedia"),
            quarantine_dir=str(tmp_path / "q"),
            min_free_mb=0,
        ),
    }
    config = {"ops": {"load_complete": {"config": {"backup_ids": [built.manifest.backup_id]}}}}
    alerts = dg.Definitions(
        assets=[load_complete],
        sensors=[make_failure_alert_sensor("receiver")],
        resources={**resources, "alert_mailer": mailer_for(smtp_server)},
    )
    with dg.instance_for_test() as instance:
        ticker = Ticker(
            alerts.resolve_sensor_def("receiver_failure_alerts"), instance, alerts, mailer_for(smtp_server)
        )
        ticker.tick()
        ok = dg.materialize(
            [load_complete],
            partition_key=built.manifest.partition_key,
            run_config=config,
            resources=resources,
            instance=instance,
        )
        evaluations = ok.get_asset_check_evaluations()
        assert len(evaluations) == len(built.manifest.table_files()) and all(e.passed for e in evaluations)
        stop = _first_id(receiver_db, P + "busstop")
        _execute(receiver_db, f'UPDATE "{P}busstop" SET latitude = latitude + 1 WHERE id = %s', (stop,))
        again = dg.materialize(
            [load_complete],
            partition_key=built.manifest.partition_key,
            run_config=config,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        ticker.tick()
    assert not again.success  # the parity check is blocking: drift fails the run, which alerts
    [failed] = [e for e in again.get_asset_check_evaluations() if not e.passed]
    assert (
        failed.asset_key == dg.AssetKey(["receiver", "complete", "busstop"]) and failed.check_name == "parity"
    )
    assert f"id={stop} changed (latitude)" in failed.description
    [msg] = smtp_server.messages  # the drift reaches the admins, with the table and the key
    assert "check parity on receiver/complete/busstop failed: AndroidRequests_busstop differs" in msg.body
    assert (
        f"id={stop} changed (latitude)" in msg.body
        and f"Partition:  {built.manifest.partition_key}" in msg.body
    )
