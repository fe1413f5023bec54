"""Test helpers for alerts: a mailer pointed at the capturing SMTP server, sensor ticks."""

from __future__ import annotations

import dagster as dg

from arb_pipeline.dagster_common.alert_sensors import AlertMailer

ADMINS = ("ops@example.org", "oncall@example.org")
UI = "http://dagster.example.org:3000"


def mailer_for(smtp, interval_minutes: float = 60.0) -> AlertMailer:
    """An unauthenticated local relay, as on a server with its own MTA."""
    return AlertMailer(
        admins=", ".join(ADMINS),
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_security="none",
        mail_from="arb@sender.example.org",
        ui_base_url=UI,
        interval_minutes=interval_minutes,
    )


class Ticker:
    """Evaluates a sensor the way the daemon does: each tick gets the previous cursor."""

    def __init__(self, sensor: dg.SensorDefinition, instance, defs: dg.Definitions, mailer: AlertMailer):
        self.sensor, self.instance, self.defs, self.mailer = sensor, instance, defs, mailer
        self.cursor: str | None = None

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            repository_def=self.defs.get_repository_def(),
            resources={"alert_mailer": self.mailer},
        )
        result = self.sensor(context)
        self.cursor = result.cursor
        return result
