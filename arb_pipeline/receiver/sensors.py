"""The inbox sensor: load runs for new backups, oldest snapshot first.

New backups of one kind on adjacent partitions (a receiver catching up after a day
down: 288 partials) go in one run over their partitions' range, up to
``max_backups_per_run``; the run still loads each in its own transaction, in snapshot
order, and shows each as its partition's materialization (receiver/assets.py). Dagster
starts a run in seconds, so a day's backlog loads in a few runs instead of 289.

``run_key`` is the backup id (a range's: first..last), so a tick evaluated twice
requests nothing twice. A backup whose load failed (disk floor reached, receiver schema
behind, database down) stays in the inbox and is requested again, alone, after
``retry_after_seconds``, up to ``max_attempts`` runs; every failed run alerts. In a run
of several, only the backup that stopped it (``STOPPED_TAG``) counts the attempt; the
ones behind it never ran and go in the next range. The cursor (kept by Dagster across
restarts) holds the attempts per backup still waiting.

A backup whose partition this receiver doesn't know (receiver/partition_fit.py) is not
requested, since Dagster would fail the whole tick: one from a sender whose clock is ahead
waits for its partition; one made with another ``ARB_PARTIAL_MINUTES``/``ARB_GO_LIVE`` is
refused. Refused is not quarantined: the backup is sound and the settings are at fault, so
it stays in the inbox and loads without a requeue once the admin aligns the settings (or
is deleted if the sender was wrong). It is logged as an error once per backup (the cursor's
``refused`` list) and named in every skip reason; the freshness alert emails as the
receiver stops loading.

A complete held by the guard on mass deletion (load/hold.py) is not requested again until
``arb approve`` (its failed run alerted with the counts), then at once, its attempts counted
from the approval; once a newer complete has loaded it is requested so it is quarantined
(older than the newest loaded). Partials are requested meanwhile as usual.

A captured partial read from a slot that no loaded complete is pinned after (set up or
recreated since: capture/chain.py) is not requested either: it waits, named in the skip
reason, until such a complete has loaded, then loads with the partials after it.

A backup no sender could make right (``at fault``: a key that is not a key, a window off its
key, a partition far ahead of the receiver's clock) is quarantined by the tick itself, as is
a folder whose manifest can't be read as one (receive.inbox.find_published): whatever one
folder holds, the tick completes and the others load.
"""

import json
import time
from pathlib import Path

import dagster as dg

from arb_pipeline.capture.chain import gap_reason
from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL, RANGE_END_TAG, RANGE_START_TAG
from arb_pipeline.load.hold import holds
from arb_pipeline.receive.inbox import (
    Pending,
    Unreadable,
    find_published,
    loaded_ids,
    newest_pin_of,
    set_aside,
)
from arb_pipeline.receiver.assets import STOPPED_TAG, load_complete, load_partial, partition_key_from_name
from arb_pipeline.receiver.partition_fit import AT_FAULT, OK, REFUSED, WAITS, fit
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings

BACKUP_TAG = "arb/backup_id"  # on a run of one backup
BATCH_TAG = "arb/batch"  # on a run of several: their ids are in its config

load_partial_job = dg.define_asset_job(
    "load_partial_job",
    selection=dg.AssetSelection.assets(load_partial),
    executor_def=dg.in_process_executor,
    tags={"arb/db-load": "1"},
)
load_complete_job = dg.define_asset_job(
    "load_complete_job",
    selection=dg.AssetSelection.assets(load_complete),
    executor_def=dg.in_process_executor,
    tags={"arb/db-load": "1"},
)
JOBS = {"partial": load_partial_job, "complete": load_complete_job}
OPS = {"partial": "load_partial", "complete": "load_complete"}
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


REFUSED_KEY = "refused"  # in the cursor, next to the attempts; never a backup id


def _runs_for(instance, backup_id: str) -> list:
    """The load runs of one backup, as records (status and times in one query)."""
    return instance.get_run_records(filters=dg.RunsFilter(tags={BACKUP_TAG: backup_id}), limit=50)


def _batch_runs(instance) -> dict[str, list]:
    """backup_id -> the recent runs of several backups that count as its attempts: an active
    one, for every backup it lists; a failed one, for the backup that stopped it
    (``STOPPED_TAG``), or for each it listed if it died without saying."""
    found: dict[str, list] = {}
    for record in instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_TAG: "1"}), limit=100):
        run = record.dagster_run
        listed = [b for op in run.run_config.get("ops", {}).values() for b in op["config"]["backup_ids"]]
        if run.status in ACTIVE:
            counted = listed
        elif run.status == dg.DagsterRunStatus.FAILURE:
            counted = [run.tags[STOPPED_TAG]] if STOPPED_TAG in run.tags else listed
        else:
            counted = []
        for backup_id in counted:
            found.setdefault(backup_id, []).append(record)
    return found


def _load_request(kind: str, backups: list[tuple[str, str]], attempt: int = 1) -> dg.RunRequest:
    """One run for ``backups`` ((backup_id, partition key), snapshot order): of one backup,
    tagged with its id; of several, a run over their partitions' range (Dagster's own
    range tags, as a single-run backfill makes)."""
    (first, first_key), (last, last_key) = backups[0], backups[-1]
    config = {"ops": {OPS[kind]: {"config": {"backup_ids": [b for b, _ in backups]}}}}
    if len(backups) == 1:
        return dg.RunRequest(
            run_key=first if attempt == 1 else f"{first}#attempt-{attempt}",
            job_name=JOBS[kind].name,
            partition_key=first_key,
            run_config=config,
            tags={BACKUP_TAG: first},
        )
    return dg.RunRequest(
        run_key=f"{first}..{last}",
        job_name=JOBS[kind].name,
        run_config=config,
        tags={BATCH_TAG: "1", RANGE_START_TAG: first_key, RANGE_END_TAG: last_key},
    )


def _batches(due: list[tuple[Pending, int]], limit: int) -> list[list[tuple[Pending, int]]]:
    """Consecutive first attempts of one kind, on adjacent partitions, as one run each (up
    to ``limit`` backups); a retry runs alone, so one bad backup can't hold the others."""
    runs: list[list[tuple[Pending, int]]] = []
    for pending, attempt in due:
        tail = runs[-1][-1] if runs else None
        if (
            tail is not None
            and attempt == 1
            and tail[1] == 1
            and tail[0].kind == pending.kind
            and len(runs[-1]) < limit
            and pending.partition_key in (tail[0].partition_key, _next_key(tail[0]))
        ):
            runs[-1].append((pending, attempt))
        else:
            runs.append([(pending, attempt)])
    return runs


def _next_key(pending: Pending) -> str | None:
    return (PARTIAL if pending.kind == "partial" else COMPLETE).get_next_partition_key(pending.partition_key)


@dg.sensor(
    name="inbox_sensor",
    jobs=[load_partial_job, load_complete_job],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def inbox_sensor(
    context: dg.SensorEvaluationContext, receiver_db: ReceiverDatabase, receiver_settings: ReceiverSettings
):
    attempts: dict = json.loads(context.cursor) if context.cursor else {}
    reported = set(attempts.pop(REFUSED_KEY, []))
    published, unreadable = find_published(Path(receiver_settings.inbox_dir))
    done = loaded_ids(receiver_db.checked_dsn())
    waiting = [p for p in published if p.backup_id not in done]
    held, newest_complete = holds(receiver_db.checked_dsn()) if waiting else ({}, None)
    due, skipped, refused = [], [], set()
    batch_runs = _batch_runs(context.instance) if waiting else {}
    now = time.time()
    captured = any(p.capture_epoch for p in waiting)
    pin = newest_pin_of(receiver_db.checked_dsn()) if captured else None
    for pending in waiting:
        gap = gap_reason(pending.capture_epoch, pin, pending.backup_id)
        if gap:  # waits for a complete pinned after its slot started (capture/chain.py); no attempt counted
            context.log.info(gap)
            skipped.append(gap)
            continue
        verdict = fit(pending.kind, pending.partition_key, pending.window)
        if verdict.verdict == AT_FAULT:  # no run could take it: quarantined here, with the reason
            at_fault = Unreadable(pending.kind, pending.backup_id, pending.path, verdict.reason)
            context.log.error(set_aside(at_fault, Path(receiver_settings.quarantine_dir)))
            continue
        if verdict.verdict != OK:
            line = f"{pending.backup_id} {verdict.verdict}: {verdict.reason}"
            if verdict.verdict == REFUSED:
                refused.add(pending.backup_id)
                if pending.backup_id not in reported:
                    context.log.error(f"{line}; left in the inbox")
            else:
                context.log.info(line)
            skipped.append(line)
            continue
        approved = held.get(pending.backup_id)
        if pending.backup_id in held and approved is None:
            if newest_complete is None or pending.snapshot_time > newest_complete:
                skipped.append(
                    f"{pending.backup_id} held for its deletions: `arb approve {pending.backup_id}`"
                )
                continue
        in_batches = batch_runs.get(pending.backup_id, [])
        if any(r.dagster_run.status in ACTIVE for r in in_batches):
            continue  # a range run has it: no query per backup while a backlog loads
        all_runs = _runs_for(context.instance, pending.backup_id) + in_batches
        if any(r.dagster_run.status in ACTIVE for r in all_runs):
            continue
        runs = [r for r in all_runs if approved is None or r.create_timestamp >= approved]
        n = len(runs)
        if n:  # it ran and the backup is still unloaded: the run failed
            if n >= receiver_settings.max_attempts:
                skipped.append(
                    f"{pending.backup_id} failed {n} times; fix the cause, then re-run it from the UI"
                )
                continue
            last = max(r.end_time or r.start_time or 0 for r in runs)
            if now - last < receiver_settings.retry_after_seconds:
                continue
        due.append((pending, len(all_runs) + 1))
    requests = []
    for batch in _batches(due, receiver_settings.max_backups_per_run)[: receiver_settings.max_runs_per_tick]:
        for pending, attempt in batch:
            attempts[pending.backup_id] = attempt
        kind, attempt = batch[0][0].kind, batch[0][1]
        requests.append(_load_request(kind, [(p.backup_id, p.partition_key) for p, _ in batch], attempt))
    for bad in unreadable:  # a run sets it aside (set_aside), fails and alerts
        key = partition_key_from_name(bad.kind, bad.backup_id)
        verdict = fit(bad.kind, key) if key is not None else None
        if verdict is not None and verdict.verdict == WAITS:
            continue  # its run can be requested once the partition exists
        if verdict is None or verdict.verdict in (REFUSED, AT_FAULT):  # no run can take it: set aside here
            context.log.error(set_aside(bad, Path(receiver_settings.quarantine_dir)))
            continue
        if (
            not _runs_for(context.instance, bad.backup_id)
            and len(requests) < receiver_settings.max_runs_per_tick
        ):
            requests.append(_load_request(bad.kind, [(bad.backup_id, key)]))
    attempts = {k: v for k, v in attempts.items() if k not in done}
    if refused:
        attempts[REFUSED_KEY] = sorted(refused)
    cursor = json.dumps(attempts, sort_keys=True)
    if not requests:
        reason = f"{len(waiting)} backup(s) waiting, none due" if waiting else "no new backup in the inbox"
        if skipped:
            reason += "; " + "; ".join(skipped[:3])
        return dg.SensorResult(skip_reason=reason, cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
