"""End to end on the receiver's Dagster layer: loads, then postprocessing by itself.

Backups come from a real sender (W1 traffic -> P1, W2 votes updating W1's events -> P2,
then a complete C) and reach the inbox through the local-folder transport. The inbox
sensor requests the loads; the postprocess sensor sees them and requests a run, which
computes what the loads changed, into TranSappViz's own columns and reportinfo rows.
Loads never write those (receiver-only): derived values survive partial and complete
loads, and a row a load changes is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete
from arb_pipeline.extract.tables import Window
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.definitions import defs as receiver_defs
from arb_pipeline.receiver.postprocess_assets import (
    AFTER_TAG,
    OP,
    POSTPROCESS_ASSETS,
    PostprocessSettings,
    postprocess_sensor,
)
from arb_pipeline.receiver.resources import ReceiverDatabase
from arb_pipeline_tests.support.backups import new_sender, partial_for, window_of
from arb_pipeline_tests.support.postprocess import (
    DERIVED_COLUMNS,
    assert_every_row_derived,
    derived_values,
)
from arb_pipeline_tests.support.receiver import Receiver, tick
from arb_pipeline_tests.support.traffic import BASELINE_OPS, PARTIAL_OPS, traffic_at

UTC = timezone.utc
P = "AndroidRequests_"


@dataclass
class Sender:
    dsn: str
    media: Path
    k1: str
    p1: BuiltBackup
    p2: BuiltBackup
    complete: BuiltBackup


@pytest.fixture(scope="module")
def sender(pg_cluster, tmp_path_factory) -> Sender:
    root = tmp_path_factory.mktemp("pp-sender")
    dsn, media, staging = new_sender(pg_cluster, root, seed=23)
    now = datetime.now(UTC)
    k1 = PARTIAL.get_partition_key_for_timestamp((now - timedelta(minutes=40)).timestamp())
    k2 = PARTIAL.get_partition_key_for_timestamp((window_of(k1).end + timedelta(seconds=1)).timestamp())
    traffic_at(dsn, media, 23, window_of(k1).start + timedelta(seconds=30), BASELINE_OPS, 120)
    p1 = partial_for(dsn, staging, media, k1, "p1")
    traffic_at(dsn, media, 24, window_of(k2).start + timedelta(seconds=30), PARTIAL_OPS, 60)
    p2 = partial_for(dsn, staging, media, k2, "p2")
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    tw = COMPLETE.time_window_for_partition_key(day)
    complete = build_complete(
        dsn,
        staging,
        partition_key=day,
        window=Window(tw.start, tw.end),
        unique="c",
        media_dir=media,
        sender_id="pp",
        pg_dump=str(find_bin_dir() / "pg_dump"),
    )
    return Sender(dsn, media, k1, p1, p2, complete)


@pytest.fixture
def rx(zoned_receiver_db, tmp_path) -> Receiver:
    return Receiver.under(zoned_receiver_db, tmp_path)


def pp_tick(instance, rx: Receiver, cursor):
    """One postprocess-sensor tick, then the run it requested, in process like the daemon."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=receiver_defs)
    result = postprocess_sensor(context)
    runs = []
    for request in result.run_requests or []:
        runs.append(
            (
                request,
                dg.materialize(
                    POSTPROCESS_ASSETS,
                    partition_key=request.partition_key,
                    run_config=request.run_config,
                    instance=instance,
                    raise_on_error=False,
                    tags={**request.tags, "dagster/run_key": request.run_key},
                    resources={
                        "receiver_db": ReceiverDatabase(dsn=rx.dsn),
                        "postprocess_settings": PostprocessSettings(),
                    },
                ),
            )
        )
    return result, runs


def computed(run) -> dict[str, int]:
    return {
        m.asset_key.path[-1]: m.metadata["rows_computed"].value
        for m in run.asset_materializations_for_node(OP)
    }


def not_transformed(dsn) -> dict[str, set[int]]:
    with connect(dsn) as conn:
        return {
            t: {r[0] for r in conn.execute(f'SELECT id FROM "{t}" WHERE transformed IS NOT TRUE')}
            for t in DERIVED_COLUMNS
        }


def marks(dsn) -> dict[str, dict[int, datetime]]:
    with connect(dsn) as conn:
        return {
            t: dict(conn.execute(f'SELECT id, arb_changed_at FROM "{t}"').fetchall()) for t in DERIVED_COLUMNS
        }


def test_postprocessing_follows_loads_and_survives_a_complete_reload(sender, rx):
    res = rx.resources()
    instance = dg.DagsterInstance.ephemeral()
    # P1: loaded by the inbox sensor's run; the postprocess sensor requests one run for its partition.
    rx.deliver(sender.p1)
    _, loads = tick(instance, res)
    assert [o.success for _, o in loads] == [True]
    result, runs = pp_tick(instance, rx, None)
    assert [(r.partition_key, r.tags[AFTER_TAG]) for r, _ in runs] == [
        (sender.k1, sender.p1.manifest.backup_id)
    ]
    assert runs[0][1].success
    first = computed(runs[0][1])
    assert first["event_periods"] > 0 and first["report_info"] > 0 and first["zones"] > 0
    assert_every_row_derived(rx.dsn)
    with connect(rx.dsn) as conn:
        # TranSappViz's views join these: a period, a half-hour and a zone's comuna per event.
        joined = conn.execute(
            f'SELECT count(*), count(tp.id), count(hh.id), count(z.comuna) FROM "{P}eventforbusv2" e '
            f'LEFT JOIN "{P}timeperiod" tp ON tp.id = e."timePeriod_id" '
            f'LEFT JOIN "{P}halfhourperiod" hh ON hh.id = e."halfHourPeriod_id" '
            f'LEFT JOIN "{P}zonificationtransantiago" z ON z.id = e.zonification_id'
        ).fetchone()
        assert joined[0] > 0 and joined[1] == joined[2] == joined[0] and joined[3] > 0
        # partials carry no stops: nearest stops wait for the complete
        assert (
            conn.execute(
                "SELECT count(*) FROM arb_pp_problem WHERE derivation = 'bus_event_nearest_stops' "
                "AND problem LIKE 'no GTFS version%'"
            ).fetchone()[0]
            > 0
        )
    quiet, runs = pp_tick(instance, rx, result.cursor)
    assert runs == [] and quiet.skip_reason

    # P2: votes changed some of W1's events. The load leaves every derived value alone
    # (receiver-only) and marks exactly the rows it changed as not transformed; the run
    # computes only those (and P2's new rows).
    rx.deliver(sender.p2)
    old_marks, before = marks(rx.dsn), derived_values(rx.dsn)
    _, loads = tick(instance, res)
    assert [o.success for _, o in loads] == [True]
    new_marks = marks(rx.dsn)
    changed = {t: {i for i, m in new_marks[t].items() if old_marks[t].get(i) != m} for t in DERIVED_COLUMNS}
    assert changed[P + "eventforbusv2"] and len(changed[P + "eventforbusv2"]) < len(
        new_marks[P + "eventforbusv2"]
    )
    assert not_transformed(rx.dsn) == changed
    loaded = derived_values(rx.dsn)
    for t in DERIVED_COLUMNS:
        assert {i: v for i, v in loaded[t].items() if i in before[t]} == before[t]
    result, runs = pp_tick(instance, rx, quiet.cursor)
    assert len(runs) == 1 and runs[0][1].success
    assert computed(runs[0][1])["event_periods"] == sum(len(c) for c in changed.values())
    assert_every_row_derived(rx.dsn)

    # The complete reloads every table: derived values are neither wiped nor redone.
    rx.deliver(sender.complete)
    before = derived_values(rx.dsn)
    with connect(rx.dsn) as conn:
        buses = conn.execute(f'SELECT count(*) FROM "{P}busv2"').fetchone()[0]
    _, loads = tick(instance, res)
    assert [o.success for _, o in loads] == [True]
    assert derived_values(rx.dsn) == before
    assert not any(not_transformed(rx.dsn).values())
    result, runs = pp_tick(instance, rx, result.cursor)
    assert len(runs) == 1 and runs[0][1].success
    assert runs[0][0].tags[AFTER_TAG] == sender.complete.manifest.backup_id
    done = computed(runs[0][1])
    with connect(rx.dsn) as conn:
        added = conn.execute(f'SELECT count(*) FROM "{P}busv2"').fetchone()[0] - buses
    assert added > 0 and done["bus_plates"] == added  # the buses no partial carried, and no other
    assert done["event_periods"] == 0  # the complete changed no event
    n_bus_events = len(new_marks[P + "eventforbusv2"])
    assert done["bus_event_nearest_stops"] == n_bus_events  # but brought the stops: all redone
    assert_every_row_derived(rx.dsn)
    with connect(rx.dsn) as conn:
        assert (
            conn.execute(
                f'SELECT count(*) FROM "{P}eventforbusv2" e WHERE e."busStop2" IS NULL AND EXISTS '
                f'(SELECT FROM "{P}stadisticdatafromregistrationbus" v WHERE v."reportOfEvent_id" = e.id)'
            ).fetchone()[0]
            == 0
        )

    # By hand, a past partition: its window is recomputed, changed or not (here: values
    # someone cleared come back in that window only).
    with connect(rx.dsn) as conn:
        conn.execute(f'UPDATE "{P}eventforbusstop" SET "timePeriod_id" = NULL')
    by_hand = dg.materialize(
        POSTPROCESS_ASSETS,
        partition_key=sender.k1,
        instance=instance,
        resources={
            "receiver_db": ReceiverDatabase(dsn=rx.dsn),
            "postprocess_settings": PostprocessSettings(),
        },
    )
    assert by_hand.success
    tw = PARTIAL.time_window_for_partition_key(sender.k1)
    with connect(rx.dsn) as conn:
        in_window = {
            r[0]
            for r in conn.execute(
                f'SELECT id FROM "{P}eventforbusstop" WHERE "timeStamp" >= %s AND "timeStamp" < %s',
                (tw.start, tw.end),
            )
        }
        redone = {
            r[0]
            for r in conn.execute(f'SELECT id FROM "{P}eventforbusstop" WHERE "timePeriod_id" IS NOT NULL')
        }
    assert in_window and redone == in_window
