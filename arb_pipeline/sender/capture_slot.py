"""The sender's capture-slot alert: a sensor that reads the slot's health every few minutes and
emails ARB_ADMINS when it is lost, past ARB_CAPTURE_MAX_LAG_MB, or gone while its publication
stays (arb_pipeline.capture.health and .alert decide; this only drives them).

A sensor, not an asset check: a check needs a run per evaluation, and the slot's cost grows
between runs nobody scheduled. A tick is two catalog lookups; with no slot and no publication
(capture never set up) it sends nothing and says so.
"""

import json

import dagster as dg

from arb_pipeline.capture.alert import due_alert
from arb_pipeline.capture.health import read_slot_health
from arb_pipeline.dagster_common import alert_sensors
from arb_pipeline.dagster_common.alert_sensors import AlertMailer
from arb_pipeline.errors import ArbError
from arb_pipeline.ops.alerts import AlertError, Mailer, dumps_state
from arb_pipeline.sender.resources import SenderDatabase
from arb_pipeline.settings import CaptureSettings

SENSOR_NAME = "capture_slot_alerts"


def make_capture_slot_sensor(
    capture: CaptureSettings, *, minimum_interval_seconds: int = 300
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Emails ARB_ADMINS when the capture slot {capture.slot} is lost or holds more than "
        f"ARB_CAPTURE_MAX_LAG_MB ({capture.max_lag_mb:g} MB) of WAL; nothing when capture is not set up",
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
        settings = alert_mailer.settings()
        now, interval = alert_sensors.now_seconds(), settings.interval_minutes * 60
        alert, new_state = due_alert(state, health, now, interval)
        summary = "; ".join(f.problem for f in health.problems) or health.figures()
        if alert is None:
            return dg.SensorResult(skip_reason=summary, cursor=dumps_state(state))
        if not settings.enabled:
            context.log.warning(f"{alert.subject}: ARB_ADMINS is not set, no email")
            return dg.SensorResult(
                skip_reason=f"ARB_ADMINS is not set: {summary}", cursor=dumps_state(new_state)
            )
        try:
            Mailer(settings).send(alert.subject, alert.body)
        except AlertError as exc:  # the state stays: the next tick tries again
            context.log.error(f"capture slot email not sent: {exc}")
            return dg.SensorResult(
                skip_reason=f"alert email failed (will retry): {exc}", cursor=dumps_state(state)
            )
        return dg.SensorResult(skip_reason=f"emailed: {alert.subject}", cursor=dumps_state(new_state))

    return capture_slot_alerts
