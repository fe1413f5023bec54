"""The sender's capture-slot alert: a sensor that reads the slot's health every few minutes and
emails ARB_ADMINS when it is lost, past ARB_CAPTURE_MAX_LAG_MB, or gone while its publication
stays (arb_pipeline.capture.health and .alert decide; this only drives them).

A sensor, not an asset check: a check needs a run per evaluation, and the slot's cost grows
between runs nobody scheduled. A tick is two catalog lookups; with no slot and no publication
(capture never set up) it sends nothing and says so.

In capture mode (``resync_job``) it also requests a complete when none is pinned after the
slot's epoch (capture/chain.py: the slot was set up or recreated since), since the receiver
holds captured partials back until such a complete has loaded.
"""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg

from arb_pipeline.capture.alert import due_alert
from arb_pipeline.capture.chain import resync_point
from arb_pipeline.capture.health import read_slot_health
from arb_pipeline.capture.pgoutput import format_lsn
from arb_pipeline.dagster_common import alert_sensors
from arb_pipeline.dagster_common.alert_sensors import AlertMailer
from arb_pipeline.dagster_common.partitions import COMPLETE
from arb_pipeline.errors import ArbError
from arb_pipeline.ops.alerts import AlertError, Mailer, dumps_state
from arb_pipeline.sender.capture_mode import newest_captured_range, newest_complete_pin
from arb_pipeline.sender.resources import SenderDatabase
from arb_pipeline.sender.schedules import last_closed_key
from arb_pipeline.settings import CaptureSettings

SENSOR_NAME = "capture_slot_alerts"
RESYNC_TAG = "arb/capture-resync"  # on a complete requested because the slot was recreated


def make_capture_slot_sensor(
    capture: CaptureSettings, *, minimum_interval_seconds: int = 300, resync_job=None
) -> dg.SensorDefinition:
    """With ``resync_job`` (the complete's job, in capture mode) the sensor also requests a
    complete when the slot was recreated and no complete has been taken since
    (capture/chain.py): the receiver refuses captured partials across the gap until one loads."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[resync_job] if resync_job is not None else None,
        description=f"Emails ARB_ADMINS when the capture slot {capture.slot} is lost or holds more than "
        f"ARB_CAPTURE_MAX_LAG_MB ({capture.max_lag_mb:g} MB) of WAL; nothing when capture is not set up"
        + ("; requests a complete when the slot was recreated" if resync_job is not None else ""),
    )
    def capture_slot_alerts(
        context: dg.SensorEvaluationContext, alert_mailer: AlertMailer, sender_db: SenderDatabase
    ):
        from arb_pipeline.pg.connect import connect

        state = json.loads(context.cursor) if context.cursor else {}
        try:
            with connect(sender_db.checked_dsn(), autocommit=True) as conn:
                health = read_slot_health(conn, capture.slot, capture.publication, capture.max_lag_mb)
        except ArbError as exc:  # the backups' own runs fail and email on an unreachable database
            return dg.SkipReason(f"sender database not reachable: {exc}")
        if not health.set_up:
            return dg.SensorResult(
                skip_reason=f"no capture slot {capture.slot} on the sender: nothing to watch",
                cursor=dumps_state({}),
            )
        position = health.status.confirmed_flush_lsn
        resync = _resync_request(context, position, resync_job) if resync_job else None
        reason, cursor = _alert(context, alert_mailer, state, health)
        if resync is not None:
            context.log.warning(f"{resync.tags[RESYNC_TAG]}; {reason}")
            return dg.SensorResult(run_requests=[resync], cursor=cursor)
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return capture_slot_alerts


def _alert(context, alert_mailer: AlertMailer, state: dict, health) -> tuple[str, str]:
    """Email the slot's problems when due: (what the tick did, the new cursor)."""
    settings = alert_mailer.settings()
    now, interval = alert_sensors.now_seconds(), settings.interval_minutes * 60
    alert, new_state = due_alert(state, health, now, interval)
    summary = "; ".join(f.problem for f in health.problems) or health.figures()
    if alert is None:
        return summary, dumps_state(state)
    if not settings.enabled:
        context.log.warning(f"{alert.subject}: ARB_ADMINS is not set, no email")
        return f"ARB_ADMINS is not set: {summary}", dumps_state(new_state)
    try:
        Mailer(settings).send(alert.subject, alert.body)
    except AlertError as exc:  # the state stays: the next tick tries again
        context.log.error(f"capture slot email not sent: {exc}")
        return f"alert email failed (will retry): {exc}", dumps_state(state)
    return f"emailed: {alert.subject}", dumps_state(new_state)


def _resync_request(context, slot_position: int | None, job) -> dg.RunRequest | None:
    """A complete run when no complete is pinned after the slot's epoch (capture/chain.py):
    set up, or recreated since. One per epoch: the run key is its position."""
    instance = context.instance
    point = resync_point(newest_captured_range(instance), slot_position, newest_complete_pin(instance))
    if point is None:
        return None
    key = last_closed_key(COMPLETE, datetime.now(timezone.utc), timedelta(0), timedelta(days=1))
    if key is None:
        return None
    lsn = format_lsn(point)
    return dg.RunRequest(
        run_key=f"capture-resync-{lsn}",
        job_name=job.name,
        partition_key=key,
        tags={
            RESYNC_TAG: f"capture slot started at {lsn} (set up or recreated) after the newest complete: "
            "a complete resyncs the receiver, whose captured partials wait for it"
        },
    )
