"""A backlog in the inbox (a receiver that was down): the inbox sensor loads consecutive
backups as one ranged run each, every backup in its own transaction and shown as its own
partition's materialization; a bad one is quarantined and the others load; one that can't
load yet stops its run there and is retried alone. Through Dagster's tick evaluation and
its runs, on real PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from arb_pipeline.dagster_common.alert_sensors import describe_failure
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.assets import STOPPED_TAG
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.receiver import Receiver, evaluate, failure_text, run_requested, tick
from arb_pipeline_tests.support.traffic import PARTIAL_OPS, traffic_at

EVENTS = "AndroidRequests_eventforbusv2"
MEDIA = dg.AssetKey(["receiver", "partial", "media"])


@pytest.fixture(scope="module")
def backlog(pg_cluster, tmp_path_factory) -> list:
    """Partials of seven adjacent windows two days old, with app traffic in each, but the
    sixth: its backup is missing (a gap no run may cover)."""
    dsn, media, staging = new_sender(pg_cluster, tmp_path_factory.mktemp("backlog-sender"), seed=23)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(days=2)).timestamp())
    built = []
    for i in range(7):
        traffic_at(dsn, media, 40 + i, window_of(key).start + timedelta(seconds=30), PARTIAL_OPS, 20)
        if i != 5:
            built.append(partial_for(dsn, staging, media, key, f"b{i}"))
        key = PARTIAL.get_next_partition_key(key)
    return built


@pytest.fixture
def rx(receiver_db, tmp_path) -> Receiver:
    return Receiver.under(receiver_db, tmp_path)


def ids(built) -> list[str]:
    return [b.manifest.backup_id for b in built]


def keys(built) -> list[str]:
    return [b.manifest.partition_key for b in built]


def ledger(dsn: str) -> dict[str, str]:
    with connect(dsn) as conn:
        return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())


def config_ids(request) -> list[str]:
    return request.run_config["ops"]["load_partial"]["config"]["backup_ids"]


def test_a_backlog_loads_in_ranged_runs_each_backup_its_partitions_materialization(backlog, rx):
    for built in reversed(backlog):  # delivery order is not load order
        rx.deliver(built)
    instance = dg.DagsterInstance.ephemeral()
    data, outcomes = evaluate(instance, rx.resources(max_backups_per_run=3))
    # Runs of up to 3 adjacent windows; the gap (window 6) ends a run: no run covers it.
    assert [config_ids(r) for r, _ in outcomes] == [ids(backlog[:3]), ids(backlog[3:5]), ids(backlog[5:])]
    ranges = [(r.partition_key_range.start, r.partition_key_range.end) for r, _ in outcomes[:2]]
    assert ranges == [(keys(backlog)[0], keys(backlog)[2]), (keys(backlog)[3], keys(backlog)[4])]
    assert outcomes[2][0].partition_key == keys(backlog)[5] and outcomes[2][0].partition_key_range is None
    assert all(result.success for _, result in outcomes)
    assert ledger(rx.dsn) == {i: "loaded" for i in ids(backlog)}
    # Each backup is its own partition's materialization, with its own figures.
    assert instance.get_materialized_partitions(MEDIA) == set(keys(backlog))
    for built in backlog:
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(["receiver", "partial", "eventforbusv2"]),
                asset_partitions=[built.manifest.partition_key],
            ),
            limit=5,
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata["backups"].value == [{"backup_id": built.manifest.backup_id, "outcome": "loaded"}]
        rows = next(f.rows for f in built.manifest.table_files() if f.table == EVENTS)
        assert metadata["rows_in_backup"].value == rows > 0
    again, outcomes = evaluate(instance, rx.resources(max_backups_per_run=3))
    assert outcomes == [] and again.skip_message == "no new backup in the inbox"


def test_a_bad_backup_in_a_run_is_quarantined_and_the_others_load(backlog, rx):
    first = backlog[:3]
    for built in first:
        rx.deliver(built)
    instance = dg.DagsterInstance.ephemeral()
    data, _ = tick(instance, rx.resources(), execute=False)
    [request] = data.run_requests
    assert config_ids(request) == ids(first)
    bad = rx.folder(first[1])
    biggest = max((f for f in first[1].manifest.table_files()), key=lambda f: f.bytes)
    with open(bad / biggest.name, "ab") as f:
        f.write(b"x")  # altered after the sender signed it
    [(_, result)] = run_requested(instance, rx.resources(), data.run_requests)
    assert not result.success
    message = failure_text(result)
    assert first[1].manifest.backup_id in message and "quarantined in" in message
    assert ledger(rx.dsn) == {i: "loaded" for i in ids([first[0], first[2]])}
    assert (rx.quarantined(first[1]) / MANIFEST_NAME).is_file() and not bad.exists()
    assert instance.get_materialized_partitions(MEDIA) == set(keys([first[0], first[2]]))


def test_a_backup_that_cannot_load_yet_stops_its_run_and_is_retried_alone(backlog, rx):
    first = backlog[:3]
    with connect(rx.dsn) as conn:  # the receiver's schema is behind the sender's
        conn.execute(f'ALTER TABLE "{EVENTS}" ADD COLUMN "receiverNeeds" int NOT NULL DEFAULT 0')
        conn.execute(f'ALTER TABLE "{EVENTS}" ALTER COLUMN "receiverNeeds" DROP DEFAULT')
        conn.commit()
    for built in first:
        rx.deliver(built)
    instance = dg.DagsterInstance.ephemeral()
    _, [(request, result)] = evaluate(instance, rx.resources(retry_after_seconds=0))
    assert config_ids(request) == ids(first) and not result.success
    assert "receiverNeeds" in failure_text(result) and "arb migrate" in failure_text(result)
    assert instance.get_run_by_id(result.run_id).tags[STOPPED_TAG] == first[0].manifest.backup_id
    alert = describe_failure(instance, result.dagster_run)  # the failed-run email's text
    assert first[0].manifest.backup_id in alert and "receiverNeeds" in alert
    assert "and the 2 backup(s) after it wait in the inbox" in alert
    assert ledger(rx.dsn) == {} and all((rx.folder(b) / MANIFEST_NAME).is_file() for b in first)
    with connect(rx.dsn) as conn:
        conn.execute(f'ALTER TABLE "{EVENTS}" DROP COLUMN "receiverNeeds"')
        conn.commit()
    # The one that stopped the run is retried alone; the ones behind it never ran: one run.
    _, outcomes = evaluate(instance, rx.resources(retry_after_seconds=0))
    assert [(r.run_key, config_ids(r), o.success) for r, o in outcomes] == [
        (f"{first[0].manifest.backup_id}#attempt-2", ids(first[:1]), True),
        (f"{first[1].manifest.backup_id}..{first[2].manifest.backup_id}", ids(first[1:]), True),
    ]
    assert ledger(rx.dsn) == {i: "loaded" for i in ids(first)}


def test_a_run_launched_again_after_some_loaded_and_left_the_inbox_succeeds(backlog, rx):
    """Dagster relaunches a crashed run with its config (dagster.yaml's run_retries), and an
    admin may re-run one from the UI: backups it lists that loaded and that retention has
    since removed are not errors."""
    first = backlog[:3]
    for built in first:
        rx.deliver(built)
    instance, keep = dg.DagsterInstance.ephemeral(), rx.resources(partial_retention_days=30)
    data, [(_, result)] = evaluate(instance, keep)
    assert result.success and ledger(rx.dsn) == {i: "loaded" for i in ids(first)}
    shutil.rmtree(rx.folder(first[0]))  # as retention does with a loaded backup
    [(_, again)] = run_requested(instance, keep, data.run_requests)
    assert again.success and ledger(rx.dsn) == {i: "loaded" for i in ids(first)}
