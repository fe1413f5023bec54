"""The Dagster side of alerts: a failed-run email sensor and a freshness email sensor,
one of each per code location.

Why one per location, each watching its own runs (and not one sensor with
``monitor_all_code_locations``): in production the sender and the receiver are two
Dagster deployments with two instances, and a sensor only sees the runs of its own
instance. Each location therefore carries its own sensors; in the one-machine demo,
where both locations share an instance, each sensor keeps to its own location's runs
(its named jobs, or implicit asset jobs that materialize its assets), so a failure is
emailed exactly once.

Why a plain ``@dg.sensor`` instead of ``@dg.run_failure_sensor``: the throttle (at most
one email per job per ``ARB_ALERT_INTERVAL_MINUTES``, then one with the count of what
was suppressed, even if no further failure comes) needs state and a timer. A plain
sensor keeps both in its cursor, which Dagster persists in the instance, and runs on
every tick. It reads failed runs through the public ``get_run_records`` with an
``updated_after`` filter; ``make_email_on_run_failure_sensor`` would always log in to
SMTP, which a local relay doesn't support.

The freshness sensor compares each asset's latest materialization with the
``fail_window`` of its ``FreshnessPolicy`` (the same numbers the UI shows) and emails
on the transitions to stale and back; the open-source UI shows freshness but sends
nothing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone

import dagster as dg
from dagster import DagsterEventType

from arb_pipeline.dagster_common.partitions import RANGE_END_TAG, RANGE_START_TAG
from arb_pipeline.ops.alerts import (
    AlertError,
    FailedRun,
    FreshnessTracker,
    Mailer,
    Throttle,
    dumps_state,
    failure_email,
    freshness_email,
)
from arb_pipeline.settings import (
    ADMINS,
    ALERT_INTERVAL_MINUTES,
    MAIL_FROM,
    SMTP_HOST,
    SMTP_PASSWORD,
    SMTP_PORT,
    SMTP_SECURITY,
    SMTP_USER,
    UI_BASE_URL,
    MailSettings,
)

IMPLICIT_JOB_PREFIXES = ("__ASSET_JOB", "__ephemeral_asset_job__")
FIRST_LOOKBACK = timedelta(hours=1)  # first tick ever: failures of the last hour
REMEMBERED_RUNS = 500


class AlertMailer(dg.ConfigurableResource):
    """SMTP settings for alert emails (MailSettings, docs/settings.md); the password
    from the environment through dg.EnvVar."""

    admins: str = ""  # ARB_ADMINS: comma-separated
    smtp_host: str = SMTP_HOST.default
    smtp_port: int = 0  # 0: 25, 587 or 465 by security
    smtp_security: str = SMTP_SECURITY.default
    smtp_user: str = ""
    smtp_password: str = ""
    mail_from: str = ""
    ui_base_url: str = ""
    interval_minutes: float = ALERT_INTERVAL_MINUTES.default_value

    def settings(self) -> MailSettings:
        """Parsed and checked by the same settings as the environment's values."""
        fields = {
            ADMINS: self.admins,
            SMTP_HOST: self.smtp_host,
            SMTP_PORT: str(self.smtp_port) if self.smtp_port else "",
            SMTP_SECURITY: self.smtp_security,
            SMTP_USER: self.smtp_user,
            SMTP_PASSWORD: self.smtp_password,
            MAIL_FROM: self.mail_from,
            UI_BASE_URL: self.ui_base_url,
            ALERT_INTERVAL_MINUTES: str(self.interval_minutes),
        }
        return MailSettings.from_env({s.name: value for s, value in fields.items()})

    def mailer(self) -> Mailer:
        return Mailer(self.settings())


def alert_mailer_from_environment(environ=None) -> AlertMailer:
    mail = MailSettings.from_env(environ)
    return AlertMailer(
        admins=", ".join(mail.admins),
        smtp_host=mail.host,
        smtp_port=mail.port,
        smtp_security=mail.security,
        smtp_user=mail.user,
        smtp_password=dg.EnvVar(SMTP_PASSWORD.name) if mail.password else "",
        mail_from=mail.mail_from,
        ui_base_url=mail.ui_base_url,
        interval_minutes=mail.interval_minutes,
    )


# --------------------------------------------------------------------------- failed runs


def _error_chain(error) -> list[str]:
    """Messages of a SerializableErrorInfo and its causes, minus Dagster's wrappers. Our own
    errors (arb_pipeline.*) already say what their cause was, so the chain stops there."""
    out = []
    while error is not None:
        text = (error.message or "").strip()
        if error.cls_name not in ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"):
            ours = text.startswith("arb_pipeline.")
            text = re.sub(
                r"^[\w.]+\.(\w+: )", r"\1", text
            )  # "arb_pipeline.errors.ConfigError: " -> "ConfigError: "
            if text and text not in out:
                out.append(text)
            if ours:
                break
        error = error.cause
    return out


def describe_failure(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """The errors of a failed run: failed steps' errors, failed checks' descriptions,
    else the run failure itself (e.g. a resource that could not start)."""
    parts: list[str] = []
    run_failure: list[str] = []
    for entry in instance.all_logs(
        run.run_id,
        of_type={
            DagsterEventType.STEP_FAILURE,
            DagsterEventType.RUN_FAILURE,
            DagsterEventType.ASSET_CHECK_EVALUATION,
        },
    ):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                text = [data.user_failure_data.description]
            else:
                text = _error_chain(data.error)
            parts.append(f"step {event.step_key}: " + "\n".join(text))
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if not evaluation.passed:
                parts.append(
                    f"check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} failed: "
                    f"{evaluation.description or '(no description)'}"
                )
        else:
            error = getattr(event.event_specific_data, "error", None)
            run_failure.extend(_error_chain(error) if error is not None else [entry.message or ""])
    if not parts:
        parts = [t for t in run_failure if t] or [
            "the run failed without an error message; open the run's logs"
        ]
    return "\n\n".join(parts)


def _partition(run: dg.DagsterRun) -> str | None:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    return f"{start}...{end}" if start and end else None


def _own_keys(repository_def) -> tuple[set[str], set[dg.AssetKey]]:
    if repository_def is None:
        return set(), set()
    jobs = {j for j in repository_def.job_names if not j.startswith(IMPLICIT_JOB_PREFIXES)}
    return jobs, set(repository_def.asset_graph.materializable_asset_keys)


def _belongs(instance, run: dg.DagsterRun, jobs: set[str], keys: set[dg.AssetKey], watch_all: bool) -> bool:
    if watch_all:
        return True
    if run.job_name in jobs:
        return True
    if not run.job_name.startswith(IMPLICIT_JOB_PREFIXES):
        return False
    selected = set(run.asset_selection or ()) | {c.asset_key for c in (run.asset_check_selection or ())}
    if not selected:  # an ephemeral job (dg.materialize): what did it plan to materialize?
        selected = {
            e.dagster_event.asset_key
            for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
            if e.dagster_event
        }
    return bool(selected & keys)


def now_seconds() -> float:
    """The sensors' clock: the tests move it forward instead of sleeping through an interval."""
    return time.time()


def make_failure_alert_sensor(
    location: str, *, minimum_interval_seconds: int = 30, watch_all_runs: bool = False
) -> dg.SensorDefinition:
    """Email the admins about every failed run of this code location, throttled per job.

    ``watch_all_runs``: claim every failed run of the instance (a deployment with a
    single code location and nothing else in the instance).
    """

    @dg.sensor(
        name=f"{location}_failure_alerts",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Emails ARB_ADMINS when a run of the {location} location fails "
        "(at most one email per job per ARB_ALERT_INTERVAL_MINUTES, then one with the count)",
    )
    def _failure_alerts(context: dg.SensorEvaluationContext, alert_mailer: AlertMailer):
        now = now_seconds()
        state = json.loads(context.cursor) if context.cursor else {}
        since = float(state.get("since", now - FIRST_LOOKBACK.total_seconds()))
        reported: list[str] = list(state.get("reported", []))
        seen = set(reported)
        settings = alert_mailer.settings()
        mailer = Mailer(settings)
        throttle = Throttle(timedelta(minutes=settings.interval_minutes), state.get("throttle"))
        jobs, keys = _own_keys(context.repository_def)
        watch_all = watch_all_runs or context.repository_def is None
        sent, problems = [], []

        def save() -> str:
            throttle.forget_older_than(now, max(settings.interval_minutes * 60 * 4, 86400))
            return dumps_state(
                {"since": since, "reported": reported[-REMEMBERED_RUNS:], "throttle": throttle.to_state()}
            )

        def mail(subject: str, body: str) -> bool:
            if not settings.enabled:
                return True
            try:
                mailer.send(subject, body)
            except AlertError as exc:
                problems.append(str(exc))
                context.log.error(f"alert email not sent: {exc}")
                return False
            sent.append(subject)
            return True

        records = context.instance.get_run_records(
            filters=dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.FAILURE],
                updated_after=datetime.fromtimestamp(since - 5, timezone.utc),
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=200,
        )
        for record in records:
            run = record.dagster_run
            if run.run_id in seen:
                continue
            if _belongs(context.instance, run, jobs, keys, watch_all):
                failed = FailedRun(
                    run_id=run.run_id,
                    job=run.job_name,
                    location=location,
                    partition=_partition(run),
                    error=describe_failure(context.instance, run),
                    failed_at=record.update_timestamp.timestamp(),
                )
                before = dict(throttle.to_state().get(run.job_name, {}))
                go, count, first, streak_since = throttle.offer(run.job_name, failed, now)
                if go and not mail(*failure_email(failed, settings.ui_base_url, count, streak_since, first)):
                    # keep it for the next tick: restore the throttle and stop here
                    if before:
                        throttle.jobs[run.job_name].__dict__.update(before)
                    else:
                        throttle.jobs.pop(run.job_name, None)
                    break
            reported.append(run.run_id)
            seen.add(run.run_id)
            since = max(since, record.update_timestamp.timestamp())
        if not problems:
            for job, latest, count, first, streak_since in throttle.due(now):
                if not mail(*failure_email(latest, settings.ui_base_url, count, streak_since, first)):
                    break
                throttle.sent(job, now)
        cursor = save()
        if problems:
            return dg.SensorResult(
                skip_reason=f"alert email failed (will retry): {problems[0]}", cursor=cursor
            )
        if not settings.enabled:
            return dg.SensorResult(skip_reason="ARB_ADMINS is not set: failure emails are off", cursor=cursor)
        reason = f"sent {len(sent)} alert email(s)" if sent else "no new failed run to email"
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return _failure_alerts


# --------------------------------------------------------------------------- freshness


def freshness_targets(assets: Iterable) -> dict[dg.AssetKey, timedelta]:
    """fail_window of every asset spec that carries a time-window FreshnessPolicy."""
    out: dict[dg.AssetKey, timedelta] = {}
    for assets_def in assets:
        for spec in getattr(assets_def, "specs", ()):
            policy = getattr(spec, "freshness_policy", None)
            window = getattr(policy, "fail_window", None)
            if window is not None:
                out[spec.key] = window.to_timedelta() if hasattr(window, "to_timedelta") else window
    return out


def make_freshness_alert_sensor(
    location: str, targets: dict[dg.AssetKey, timedelta], *, minimum_interval_seconds: int = 60
) -> dg.SensorDefinition:
    """Email when assets of this location turn stale (no materialization within their
    FreshnessPolicy's fail window), and again when they recover. One email per tick per
    direction, listing every asset that changed."""
    watched = dict(targets)

    @dg.sensor(
        name=f"{location}_freshness_alerts",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Emails ARB_ADMINS when {location} assets go stale (FreshnessPolicy fail window) "
        "and when they recover",
    )
    def _freshness_alerts(context: dg.SensorEvaluationContext, alert_mailer: AlertMailer):
        now = now_seconds()
        state = json.loads(context.cursor) if context.cursor else {}
        tracker = FreshnessTracker(state)
        observed = {}
        for key, window in watched.items():
            event = context.instance.get_latest_materialization_event(key)
            observed[key.to_user_string()] = (event.timestamp if event else None, window.total_seconds())
        previous = dict(tracker.states), dict(tracker.first_seen)
        stale, recovered = tracker.evaluate(observed, now)
        settings = alert_mailer.settings()
        sent = []
        if settings.enabled:
            mailer = Mailer(settings)
            for items in (stale, recovered):
                if not items:
                    continue
                try:
                    mailer.send(*freshness_email(location, items, now, settings.ui_base_url))
                except AlertError as exc:
                    # forget these transitions so the next tick tries again
                    for item in items:
                        tracker.states[item.key] = previous[0].get(item.key, "fresh")
                    context.log.error(f"freshness email not sent: {exc}")
                    return dg.SensorResult(
                        skip_reason=f"freshness email failed (will retry): {exc}",
                        cursor=dumps_state(tracker.to_state()),
                    )
                sent.append(f"{len(items)} {items[0].state}")
        cursor = dumps_state(tracker.to_state())
        n_stale = sum(1 for s in tracker.states.values() if s == "stale")
        if not settings.enabled and (stale or recovered):
            return dg.SensorResult(
                skip_reason="ARB_ADMINS is not set: freshness emails are off", cursor=cursor
            )
        reason = (
            f"emailed: {', '.join(sent)}; " if sent else ""
        ) + f"{n_stale} of {len(observed)} assets stale"
        return dg.SensorResult(skip_reason=reason, cursor=cursor)

    return _freshness_alerts


def own_runs(context: dg.SensorEvaluationContext):
    """A predicate: is this run one of the sensor's code location's (see _belongs)?"""
    jobs, keys = _own_keys(context.repository_def)
    watch_all = context.repository_def is None
    return lambda run: _belongs(context.instance, run, jobs, keys, watch_all)


def alert_sensors(location: str, assets: Sequence) -> list[dg.SensorDefinition]:
    """The operations sensors of a code location: failure and freshness emails, and the
    dead-run reaper (whose failures the first emails). Its Definitions also need the
    ``alert_mailer`` resource (``alert_mailer_from_environment()``)."""
    from arb_pipeline.dagster_common.run_reaper import make_dead_run_sensor

    return [
        make_failure_alert_sensor(location),
        make_freshness_alert_sensor(location, freshness_targets(assets)),
        make_dead_run_sensor(location, own_runs),
    ]
