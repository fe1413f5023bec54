"""Postprocessing on the receiver: one asset per derivation, downstream of the loads, all
computed by one step (a multi-asset) so that a table's derivations share their writes.

The work itself is in ``arb_pipeline/postprocess`` (plain Python and SQL); these assets
decide *what* a run covers and report it.

**Partitions.** The assets are on the partial loads' 5-minute partitions (``PARTIAL``)
and depend on the ``receiver/partial/<table>`` assets of the same partition. What a
run computes is not tied to its partition, though: every run first computes what is
*pending* — every row any load (partial or complete) inserted or changed since the
derivation last ran (the loads' ``arb_changed_at`` marker, see postprocess/engine.py).
The partition adds a *window*: with ``recompute_window`` (the default for runs started
by hand), the rows whose ``timeStamp`` lies in the run's partition window are
recomputed too, changed or not. So

* ``dagster asset materialize ... --select group:receiver_postprocess --partition KEY``
  redoes that past window (and whatever is pending);
* a backfill over a range of partitions runs as **one** run (single-run backfill
  policy) and recomputes the whole range set-based; a range that starts at the first
  partition, or ends at the last, is open on that side, so a backfill of every
  partition is a **full reprocess** (rows older than go-live included);
* ``full: true`` in the run config recomputes everything.

Why not also on the completes' daily partitions: an asset has one partitions
definition, and a complete changes rows of every window. A complete load marks what
it changed, like a partial, so the run after it computes exactly that.

**Trigger.** ``postprocess_sensor`` watches the materializations of the load assets
(from the inbox sensor's runs, the UI or the CLI alike) and, after loads that applied
a backup, requests one ``postprocess_job`` run with ``recompute_window: false`` for the
newest loaded partition (for a complete: the newest partial window closed when it was
loaded). Several loads between two ticks make one run: it computes all they changed.
Every step holds the ``receiver_db`` pool, so postprocessing never runs beside a load.
"""

import json
import warnings
from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from arb_pipeline import settings
from arb_pipeline.dagster_common.partitions import PARTIAL, SHARED
from arb_pipeline.postprocess import (
    BusEventDirection,
    BusPlates,
    EventPeriods,
    NearestStops,
    ReportInfo,
    Scope,
    Zones,
    run_derivations,
)
from arb_pipeline.postprocess.engine import BATCH_ROWS, RunResult
from arb_pipeline.postprocess.run import WORKERS
from arb_pipeline.postprocess.tables import app_table
from arb_pipeline.receiver.assets import loaded_key
from arb_pipeline.receiver.resources import ReceiverDatabase

GROUP = "receiver_postprocess"
UTC = timezone.utc


class PostprocessSettings(dg.ConfigurableResource):
    local_timezone: str = settings.LOCAL_TIMEZONE.default
    direction_max_gap_minutes: int = settings.DIRECTION_MAX_GAP_MINUTES.default_value
    batch_rows: int = BATCH_ROWS
    workers: int = Field(default=WORKERS, ge=1, description="connections computing at once")


def postprocess_settings_from_environment(
    receiver: settings.ReceiverSettings | None = None,
) -> PostprocessSettings:
    """From ARB_LOCAL_TIMEZONE and ARB_DIRECTION_MAX_GAP_MINUTES; a bad value is an error naming it."""
    receiver = receiver or settings.ReceiverSettings.from_env()
    return PostprocessSettings(
        local_timezone=receiver.local_timezone, direction_max_gap_minutes=receiver.direction_max_gap_minutes
    )


class PostprocessConfig(dg.Config):
    recompute_window: bool = Field(
        default=True,
        description="also recompute the rows whose timeStamp lies in the run's partition window(s), "
        "changed or not (runs after a load set false: they compute what is pending)",
    )
    full: bool = Field(default=False, description="recompute every row")


_EVENTS = [app_table("eventforbusstop"), app_table("eventforbusv2")]
_STATS = [app_table("stadisticdatafromregistrationbusstop"), app_table("stadisticdatafromregistrationbus")]
# name -> (derivation factory, loaded tables it reads, description)
DERIVATIONS = {
    "event_periods": (
        lambda s: EventPeriods(s.local_timezone),
        _EVENTS,
        'TranSappViz\'s "timePeriod_id" (day type Laboral/Sábado/Domingo) and "halfHourPeriod_id" '
        "of each event, from its local time of creation",
    ),
    "bus_plates": (
        lambda s: BusPlates(),
        [app_table("busv2")],
        "each bus's plate checked against the known formats (busv2 stays as shipped)",
    ),
    "report_info": (
        lambda s: ReportInfo(s.direction_max_gap_minutes),
        [app_table("report"), app_table("busv2")],
        "one TranSappViz reportinfo row per report: type, plate, service, bus uuid, stop, "
        "coordinates, the user's zone and the trip's direction",
    ),
    "zones": (
        lambda s: Zones(),
        [*_EVENTS, *_STATS],
        "TranSappViz's zonification_id of each event (its newest vote), point in polygon in PostGIS",
    ),
    "bus_event_direction": (
        lambda s: BusEventDirection(s.direction_max_gap_minutes),
        [app_table("eventforbusv2")],
        "TranSappViz's direction of each bus event from the same phone's latest trip token "
        "before it (trips arrive with complete backups)",
    ),
    "bus_event_nearest_stops": (
        lambda s: NearestStops(),
        [app_table("eventforbusv2"), _STATS[1]],
        'TranSappViz\'s "busStop1", "busStop2" of each bus event: the two nearest stops, a KNN '
        "search in PostGIS",
    ),
}


def _scope(context: dg.AssetExecutionContext, config: PostprocessConfig) -> Scope:
    if not config.recompute_window or config.full:
        return Scope(recompute_window=False, full=config.full)
    keys = context.partition_key_range
    window = context.partition_time_window
    first, last = PARTIAL.get_first_partition_key(), PARTIAL.get_last_partition_key()
    return Scope(
        window_start=None if keys.start == first else window.start,
        window_end=None if keys.end == last else window.end,
        recompute_window=True,
    )


def _metadata(result: RunResult, scope: Scope) -> dict:
    meta = {
        "mode": result.mode,
        "reason": result.reason,
        "rows_computed": dg.MetadataValue.int(result.computed),
        "rows_with_problems": dg.MetadataValue.int(result.problems),
        "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "per_table": dg.MetadataValue.json(
            {s.writes: {"computed": s.computed, "problems": s.problems} for s in result.sources}
        ),
    }
    if scope.recompute_window:
        meta["recomputed_window"] = f"[{scope.window_start or '-infinity'}, {scope.window_end or 'infinity'})"
    samples = [p for s in result.sources for p in s.sample_problems]
    if samples:
        meta["sample_problems"] = dg.MetadataValue.json(samples)
    if result.done_through:
        meta["done_through"] = result.done_through.isoformat()
    return meta


OP = "postprocess"


def _spec(name: str) -> dg.AssetSpec:
    _factory, tables, description = DERIVATIONS[name]
    return dg.AssetSpec(
        key=dg.AssetKey(["receiver", "postprocess", name]),
        group_name=GROUP,
        partitions_def=PARTIAL,
        deps=[loaded_key("partial", t) for t in tables],
        kinds={"postgres"},
        description=description,
    )


SPECS = {_spec(name).key: name for name in DERIVATIONS}


with warnings.catch_warnings():  # single-run backfills are "beta" in Dagster 1.13; we rely on them knowingly
    warnings.simplefilter("ignore", dg.BetaWarning)

    # One asset per derivation, computed by one step: the derivations of a table write its
    # rows in one UPDATE per batch (postprocess/run.py), and a run pays one step's start.
    # A subset (one asset picked in the UI) runs just those derivations.
    @dg.multi_asset(
        name=OP,
        specs=[_spec(name) for name in DERIVATIONS],
        can_subset=True,
        pool="receiver_db",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def postprocess(
        context: dg.AssetExecutionContext,
        config: PostprocessConfig,
        receiver_db: ReceiverDatabase,
        postprocess_settings: PostprocessSettings,
    ):
        scope = _scope(context, config)
        keys = [k for k in SPECS if k in context.selected_asset_keys]
        results = run_derivations(
            receiver_db.checked_dsn(),
            [DERIVATIONS[SPECS[k]][0](postprocess_settings) for k in keys],
            scope,
            batch_rows=postprocess_settings.batch_rows,
            workers=postprocess_settings.workers,
        )
        for key, result in zip(keys, results, strict=True):
            name = SPECS[key]
            context.log.info(
                f"{name}: {result.mode} run ({result.reason}): {result.computed} rows computed, "
                f"{result.problems} with a problem, {result.seconds:.1f} s"
            )
            if result.problems:  # bad rows are recorded, never a failed run
                samples = "; ".join(p for s in result.sources for p in s.sample_problems)
                context.log.warning(
                    f"{name}: {result.problems} row(s) with a problem (table arb_pp_problem, "
                    f"derivation '{name}'), e.g. {samples}"
                )
            yield dg.MaterializeResult(asset_key=key, metadata=_metadata(result, scope))


POSTPROCESS_ASSETS = [postprocess]

postprocess_job = dg.define_asset_job(
    "postprocess_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    tags={"arb/postprocess": "1"},
)

# The load assets yield their media asset last: its materialization means the load step succeeded.
WATCHED = {"partial": loaded_key("partial", "media"), "complete": loaded_key("complete", "media")}
AFTER_TAG = "arb/postprocess-after"


def last_closed_partition(when: datetime) -> str | None:
    """The key of the newest partial window that had ended at ``when`` (None before go-live)."""
    closed = when - timedelta(minutes=SHARED.partial_minutes)
    if closed < SHARED.go_live:
        return None
    return PARTIAL.get_partition_key_for_timestamp(closed.timestamp())


def pending_run_config() -> dict:
    return {"ops": {OP: {"config": {"recompute_window": False}}}}


def _applied(record) -> list[str]:
    """Backups a load materialization applied (not already loaded, not superseded)."""
    mat = record.asset_materialization
    backups = mat.metadata.get("backups") if mat else None
    return [b["backup_id"] for b in (backups.value if backups else []) if b.get("outcome") == "loaded"]


@dg.sensor(
    name="postprocess_sensor",
    job=postprocess_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="one postprocessing run after loads that applied a backup",
)
def postprocess_sensor(context: dg.SensorEvaluationContext):
    cursor: dict = json.loads(context.cursor) if context.cursor else {}
    newest, applied = None, []
    for kind, key in WATCHED.items():
        after = cursor.get(kind)
        while True:
            page = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=500, ascending=True
            )
            for record in page.records:
                after = record.storage_id
                ids = _applied(record)
                if not ids:
                    continue
                if kind == "partial":
                    partition = record.partition_key
                else:  # the newest partial window closed when the complete was loaded
                    partition = last_closed_partition(datetime.fromtimestamp(record.timestamp, UTC))
                if partition is None:
                    continue
                applied += ids
                newest = max(newest or partition, partition)
            if not page.has_more:
                break
        if after is not None:
            cursor[kind] = after
    new_cursor = json.dumps(cursor, sort_keys=True)
    if newest is None:
        return dg.SensorResult(
            skip_reason="no load applied a backup since the last postprocessing request", cursor=new_cursor
        )
    run_key = "postprocess-" + "-".join(f"{k}{cursor.get(k, 0)}" for k in sorted(WATCHED))
    return dg.SensorResult(
        cursor=new_cursor,
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                partition_key=newest,
                run_config=pending_run_config(),
                tags={AFTER_TAG: ",".join(applied)[:500]},
            )
        ],
    )
