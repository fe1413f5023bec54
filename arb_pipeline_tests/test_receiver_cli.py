"""`dagster asset materialize --select group:receiver_partial --partition KEY` (the real CLI,
in a subprocess) on an inbox holding, besides a good backup of KEY, a misnamed one and one
whose manifest doesn't parse: it loads the good one, quarantines the two bad ones with their
reason (as the inbox sensor's runs do: receive.inbox.set_aside), and exits non-zero. Bad
backups of other partitions are left for their own runs. Nothing is deleted.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.quarantine import REASON_NAME
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.dagster_cli import run_materialize
from arb_pipeline_tests.support.receiver import Receiver, tick
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

UTC = timezone.utc
EVENTS = "AndroidRequests_eventforbusv2"


def files_under(root: Path) -> dict[str, bytes]:
    """Every file of the backup folders under ``root`` (an inbox or a quarantine: both hold
    <kind>/<backup folder>/), by path from there; REASON.txt aside."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != REASON_NAME
    }


def ledger(dsn: str) -> dict[str, str]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())


def event_rows(dsn: str) -> int:
    with connect(dsn) as conn:
        return conn.execute(f'SELECT count(*) FROM "{EVENTS}"').fetchone()[0]


@pytest.fixture
def sender(pg_cluster, receiver_db, tmp_path):
    """(receiver with an empty inbox, a partition key with traffic, build(unique) -> its partial)."""
    (tmp_path / "sender").mkdir()
    dsn, media, staging = new_sender(pg_cluster, tmp_path / "sender", seed=23)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=30)).timestamp())
    traffic_at(dsn, media, 23, window_of(key).start + timedelta(seconds=60), BASELINE_OPS, 120)
    rx = Receiver.under(receiver_db, tmp_path)
    return rx, key, lambda unique: partial_for(dsn, staging, media, key, unique)


@pytest.fixture
def inbox_with_bad_backups(sender):
    """(receiver, key, good id, misnamed folder, unparsable folder, other partition's folder)."""
    rx, key, build = sender
    good = build("good")
    rx.deliver(good)
    # Misnamed: a valid backup of KEY in a folder named as another run's backup of KEY.
    renamed = rx.deliver(build("second"))
    misnamed = renamed.rename(renamed.with_name(f"partial-{key}-renamed"))
    unparsable = rx.inbox / "partial" / f"partial-{key}-broken"
    shutil.copytree(rx.folder(good), unparsable)
    (unparsable / MANIFEST_NAME).write_text("{not json")
    other_key = PARTIAL.get_partition_key_for_timestamp(
        (window_of(key).end + timedelta(minutes=7)).timestamp()
    )
    other = rx.inbox / "partial" / f"partial-{other_key}-broken"
    shutil.copytree(unparsable, other)
    return rx, key, good.manifest.backup_id, misnamed, unparsable, other


def cli_env(rx: Receiver, home: Path) -> dict[str, str]:
    home.mkdir()
    return {
        **os.environ,
        "ARB_RECEIVER_DSN": rx.dsn,
        "ARB_INBOX_DIR": str(rx.inbox),
        "ARB_RECEIVER_MEDIA_DIR": str(rx.media),
        "ARB_QUARANTINE_DIR": str(rx.quarantine),
        "ARB_MIN_FREE_MB": "0",
        "DAGSTER_HOME": str(home),
    }


def test_the_cli_loads_the_good_backup_quarantines_the_bad_ones_and_fails(inbox_with_bad_backups, tmp_path):
    rx, key, good_id, misnamed, unparsable, other = inbox_with_bad_backups
    before = files_under(rx.inbox)

    done = run_materialize("receiver", "receiver_partial", key, cli_env(rx, tmp_path / "home"))

    assert done.returncode != 0, "a run that set backups aside must fail, so the CLI exits non-zero"
    assert ledger(rx.dsn) == {good_id: "loaded"} and event_rows(rx.dsn) > 0
    q = rx.quarantine / "partial"
    assert not misnamed.exists() and not unparsable.exists()
    reason = (q / misnamed.name / REASON_NAME).read_text()
    assert (
        f"misnamed folder: manifest says partial/partial-{key}-second, folder is partial/{misnamed.name}"
        in reason
    )
    assert "not valid JSON" in (q / unparsable.name / REASON_NAME).read_text()
    assert other.is_dir() and not (q / other.name).exists(), "another partition's backup waits for its run"
    assert files_under(rx.inbox) | files_under(rx.quarantine) == before, "nothing deleted"
    log = done.stdout + done.stderr
    assert misnamed.name in log and unparsable.name in log and "could not be loaded" in log


def test_the_sensor_sets_them_aside_the_same_way(inbox_with_bad_backups, tmp_path):
    """The inbox sensor's runs, one per backup, end the same: one decision (set_aside)."""
    rx, key, good_id, misnamed, unparsable, other = inbox_with_bad_backups
    instance = dg.DagsterInstance.ephemeral()
    result, outcomes = tick(instance, rx.resources())
    assert {r.partition_key for r in result.run_requests} == {
        key,
        other.name.removeprefix("partial-").removesuffix("-broken"),
    }
    assert ledger(rx.dsn) == {good_id: "loaded"}
    q = rx.quarantine / "partial"
    for folder in (misnamed, unparsable, other):
        assert not folder.exists() and (q / folder.name / REASON_NAME).is_file()
    assert "folder is partial/" + misnamed.name in (q / misnamed.name / REASON_NAME).read_text()
    assert [res.success for _, res in outcomes].count(True) == 1


def test_a_quarantine_that_fails_leaves_the_bad_backup_in_place(inbox_with_bad_backups, tmp_path):
    rx, key, good_id, misnamed, unparsable, _ = inbox_with_bad_backups
    rx.quarantine.write_text("a file where the quarantine folder should be")

    done = run_materialize("receiver", "receiver_partial", key, cli_env(rx, tmp_path / "home"))

    assert done.returncode != 0 and ledger(rx.dsn) == {good_id: "loaded"}
    assert misnamed.is_dir() and unparsable.is_dir()
    assert "It could not be quarantined: can't create the quarantine folder" in done.stdout + done.stderr


# Root reads a mode-000 file; without these two capabilities it is held to the modes like any user.
AS_A_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="root needs setpriv here")
def test_a_manifest_the_receiver_may_not_read_stays_in_the_inbox_and_fails_the_run(sender, tmp_path):
    """Modes are the upload's or the receiver's doing, not the backup's: it is not quarantined."""
    rx, key, build = sender
    good, locked = build("good"), build("locked")
    rx.deliver(good)
    manifest = rx.deliver(locked) / MANIFEST_NAME
    manifest.chmod(0)
    env = cli_env(rx, tmp_path / "home")
    wrapper = AS_A_USER if os.geteuid() == 0 else []

    done = run_materialize("receiver", "receiver_partial", key, env, wrapper)

    assert done.returncode != 0
    assert ledger(rx.dsn) == {good.manifest.backup_id: "loaded"}
    assert manifest.is_file() and not rx.quarantine.exists()
    assert f"the receiver can't read {manifest}" in done.stdout + done.stderr
    manifest.chmod(0o644)  # the fix the message names; the next run takes it
    assert run_materialize("receiver", "receiver_partial", key, env, wrapper).returncode == 0
    assert ledger(rx.dsn) == {good.manifest.backup_id: "loaded", locked.manifest.backup_id: "loaded"}


def test_the_cli_loads_a_range_of_partitions_in_one_run_each_its_own_materialization(
    pg_cluster, receiver_db, tmp_path
):
    """`--partition-range FIRST...LAST` (a catch-up by hand): every unloaded backup of those
    partitions, in one run, each backup its partition's materialization."""
    (tmp_path / "sender").mkdir()
    dsn, media, staging = new_sender(pg_cluster, tmp_path / "sender", seed=29)
    first = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    keys = [first, PARTIAL.get_next_partition_key(first), None]
    keys[2] = PARTIAL.get_next_partition_key(keys[1])
    rx = Receiver.under(receiver_db, tmp_path)
    built = []
    for i, key in enumerate(keys):
        traffic_at(dsn, media, 60 + i, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 40)
        built.append(partial_for(dsn, staging, media, key, f"r{i}"))
        rx.deliver(built[-1])
    env = cli_env(rx, tmp_path / "home")
    done = run_materialize("receiver", "receiver_partial", f"{keys[0]}...{keys[2]}", env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ledger(rx.dsn) == {b.manifest.backup_id: "loaded" for b in built}
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run] = instance.get_run_records()
        assert run.dagster_run.tags["dagster/asset_partition_range_start"] == keys[0]
        events = instance.fetch_materializations(
            dg.AssetKey(["receiver", "partial", "media"]), limit=10
        ).records
        assert sorted(
            (e.partition_key, e.asset_materialization.metadata["backups"].value[0]["backup_id"])
            for e in events
        ) == [(b.manifest.partition_key, b.manifest.backup_id) for b in built]
