"""The inbox sensor: one load run per new backup, oldest snapshot first.

``run_key`` is the backup id, so a tick evaluated twice requests nothing twice. A
backup whose load failed (disk floor reached, receiver schema behind, database down)
stays in the inbox and is requested again after ``retry_after_seconds``, up to
``max_attempts`` runs; every failed run alerts. The cursor (kept by Dagster across
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

A backup no sender could make right (``at fault``: a key that is not a key, a window off its
key, a partition far ahead of the receiver's clock) is quarantined by the tick itself, as is
a folder whose manifest can't be read as one (receive.inbox.find_published): whatever one
folder holds, the tick completes and the others load.
"""

import json
import time
from pathlib import Path

import dagster as dg

from arb_pipeline.load.hold import holds
from arb_pipeline.receive.inbox import Unreadable, find_published, loaded_ids, set_aside
from arb_pipeline.receiver.assets import load_complete, load_partial, partition_key_from_name
from arb_pipeline.receiver.partition_fit import AT_FAULT, OK, REFUSED, WAITS, fit
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings

BACKUP_TAG = "arb/backup_id"

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


def _load_request(kind: str, backup_id: str, partition_key: str, attempt: int = 1) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=backup_id if attempt == 1 else f"{backup_id}#attempt-{attempt}",
        job_name=JOBS[kind].name,
        partition_key=partition_key,
        run_config={"ops": {OPS[kind]: {"config": {"backup_id": backup_id}}}},
        tags={BACKUP_TAG: backup_id},
    )


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
    requests, skipped, refused = [], [], set()
    now = time.time()
    for pending in waiting:
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
        if len(requests) >= receiver_settings.max_runs_per_tick:
            break
        approved = held.get(pending.backup_id)
        if pending.backup_id in held and approved is None:
            if newest_complete is None or pending.snapshot_time > newest_complete:
                skipped.append(
                    f"{pending.backup_id} held for its deletions: `arb approve {pending.backup_id}`"
                )
                continue
        all_runs = _runs_for(context.instance, pending.backup_id)
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
        attempts[pending.backup_id] = n + 1
        requests.append(
            _load_request(pending.kind, pending.backup_id, pending.partition_key, len(all_runs) + 1)
        )
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
            requests.append(_load_request(bad.kind, bad.backup_id, key))
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
