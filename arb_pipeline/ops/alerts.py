"""Alert emails for the admins (the original's ADMINS): plain Python, no Dagster.

- :class:`Mailer` (its settings: ``settings.MailSettings``): SMTP over a plain connection, STARTTLS or SSL,
  with a login only when a user is set, so an unauthenticated local relay (port 25 on
  localhost, the usual MTA setup) works as well as a submission server.
- :class:`Throttle`: at most one email per key (a job) per interval. Failures inside
  the interval are counted; once it has passed, one more email says how many were
  suppressed and shows the latest. Its state is JSON, kept in a sensor cursor.
- :class:`FreshnessTracker`: turns "last materialized at" into transitions (fresh ->
  stale, stale -> fresh), so a stale asset emails once and its recovery once more.
- ``failure_email`` / ``freshness_email``: the messages, with links into the Dagster UI.

The Dagster sensors that drive these are in ``alert_sensors.py``.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from arb_pipeline import settings
from arb_pipeline.errors import ArbError, ConfigError
from arb_pipeline.settings import MailSettings

SUBJECT_PREFIX = "[arb]"
MAX_ERROR_CHARS = 4000


class AlertError(ArbError):
    """An alert could not be sent; the message names the SMTP setting to check."""


def parse_admins(raw: str) -> tuple[str, ...]:
    """``ARB_ADMINS``: comma- or semicolon-separated addresses (``Name <a@b>`` allowed)."""
    return settings.ADMINS.parse_text(raw)


class Mailer:
    """Sends plain-text emails to the admins with smtplib."""

    def __init__(self, settings: MailSettings):
        self.settings = settings

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertError(
                f"cannot connect to the SMTP server {where} (ARB_SMTP_HOST, ARB_SMTP_PORT, "
                f"ARB_SMTP_SECURITY={s.security}): {exc}. Is the mail server running there?"
            ) from exc
        try:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.user:
                smtp.login(s.user, s.password)
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise AlertError(
                f"the SMTP server {where} refused the login of ARB_SMTP_USER={s.user!r} "
                f"({exc.smtp_code}): check ARB_SMTP_USER and ARB_SMTP_PASSWORD"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            hint = (
                "unset ARB_SMTP_USER for a relay without login"
                if "AUTH" in str(exc)
                else "check ARB_SMTP_SECURITY (none, starttls or ssl) against the server"
            )
            raise AlertError(f"SMTP session with {where} failed: {exc}; {hint}") from exc
        return smtp

    def check(self) -> str:
        """Connect (and STARTTLS and log in, as configured) without sending anything."""
        smtp = self._connect()
        try:
            code, banner = smtp.noop()
            return f"{self.settings.host}:{self.settings.port} answers ({code})"
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def send(self, subject: str, body: str, to: tuple[str, ...] | None = None) -> EmailMessage:
        recipients = tuple(to or self.settings.admins)
        if not recipients:
            raise ConfigError("no alert recipients: set ARB_ADMINS to the admins' email addresses")
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.settings.sender_address
        msg["To"] = ", ".join(recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="arb-pipeline")
        msg.set_content(body)
        smtp = self._connect()
        try:
            smtp.send_message(msg, from_addr=self.settings.sender_address, to_addrs=list(recipients))
        except (OSError, smtplib.SMTPException) as exc:
            raise AlertError(
                f"the SMTP server {self.settings.host}:{self.settings.port} did not accept the alert "
                f"for {', '.join(recipients)}: {exc}"
            ) from exc
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return msg


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class FailedRun:
    """What an admin needs to know about one failed run."""

    run_id: str
    job: str
    location: str
    partition: str | None
    error: str
    failed_at: float  # epoch seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "location": self.location,
            "partition": self.partition,
            "error": self.error[:MAX_ERROR_CHARS],
            "failed_at": self.failed_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FailedRun":
        return cls(
            d["run_id"],
            d["job"],
            d.get("location", ""),
            d.get("partition"),
            d.get("error", ""),
            float(d.get("failed_at", 0)),
        )


def run_url(base_url: str, run_id: str) -> str:
    return (
        f"{base_url.rstrip('/')}/runs/{run_id}"
        if base_url
        else f"(set ARB_UI_BASE_URL for a link) run {run_id}"
    )


def asset_url(base_url: str, path: list[str]) -> str:
    return f"{base_url.rstrip('/')}/assets/{'/'.join(path)}" if base_url else "/".join(path)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def failure_email(
    run: FailedRun,
    base_url: str,
    suppressed: int = 0,
    since: float | None = None,
    first_suppressed: FailedRun | None = None,
) -> tuple[str, str]:
    """Subject and body for a failed run; ``suppressed`` counts failures of the same job
    not emailed since the previous email (the throttle), ``run`` being the latest."""
    where = f" partition {run.partition}" if run.partition else ""
    if suppressed:
        subject = (
            f"{SUBJECT_PREFIX} {run.location}: {run.job} failed {suppressed} more time(s)"
            f"{'; latest' + where if where else ''}"
        )
    else:
        subject = f"{SUBJECT_PREFIX} {run.location}: {run.job} failed{where}"
    lines = []
    if suppressed:
        lines += [
            f"{suppressed} failure(s) of job {run.job} were not emailed since "
            f"{_when(since) if since else 'the last alert'} (at most one email per job every "
            "ARB_ALERT_INTERVAL_MINUTES). The latest:",
            "",
        ]
    lines += [
        f"Job:        {run.job}",
        f"Location:   {run.location}",
        f"Partition:  {run.partition or '(none)'}",
        f"Failed at:  {_when(run.failed_at)}",
        f"Run:        {run_url(base_url, run.run_id)}",
        "",
        "Error:",
        run.error[:MAX_ERROR_CHARS] or "(no error message recorded; open the run)",
    ]
    if first_suppressed is not None and first_suppressed.run_id != run.run_id:
        lines += [
            "",
            f"First suppressed failure: {run_url(base_url, first_suppressed.run_id)} "
            f"(partition {first_suppressed.partition or '(none)'}, {_when(first_suppressed.failed_at)})",
        ]
    return subject, "\n".join(lines) + "\n"


@dataclass
class _JobState:
    last_sent: float = 0.0
    suppressed: int = 0
    since: float = 0.0  # when the suppressed streak started
    latest: dict[str, Any] | None = None  # the latest suppressed failure
    first: dict[str, Any] | None = None  # the first suppressed failure


class Throttle:
    """At most one email per key per ``interval``; the next one counts the suppressed."""

    def __init__(self, interval: timedelta, state: dict[str, Any] | None = None):
        self.interval = interval.total_seconds()
        self.jobs: dict[str, _JobState] = {k: _JobState(**v) for k, v in (state or {}).items()}

    def to_state(self) -> dict[str, Any]:
        return {k: v.__dict__ for k, v in self.jobs.items()}

    def offer(self, key: str, run: FailedRun, now: float) -> tuple[bool, int, FailedRun | None, float]:
        """Record a failure. Returns (send now?, suppressed count to report, first suppressed, since)."""
        st = self.jobs.setdefault(key, _JobState())
        if now - st.last_sent >= self.interval:
            count, first, since = (
                st.suppressed,
                (FailedRun.from_dict(st.first) if st.first else None),
                st.since,
            )
            st.last_sent, st.suppressed, st.since, st.latest, st.first = now, 0, 0.0, None, None
            return True, count, first, since
        if not st.suppressed:
            st.since, st.first = run.failed_at, run.to_dict()
        st.suppressed += 1
        st.latest = run.to_dict()
        return False, 0, None, 0.0

    def due(self, now: float) -> list[tuple[str, FailedRun, int, FailedRun | None, float]]:
        """Suppressed failures whose interval has passed: (key, latest, count, first, since) each,
        to be emailed now; the caller calls ``sent(key, now)`` after each email went out."""
        out = []
        for key, st in self.jobs.items():
            if st.suppressed and st.latest and now - st.last_sent >= self.interval:
                out.append(
                    (
                        key,
                        FailedRun.from_dict(st.latest),
                        st.suppressed,
                        FailedRun.from_dict(st.first) if st.first else None,
                        st.since,
                    )
                )
        return out

    def sent(self, key: str, now: float) -> None:
        st = self.jobs.setdefault(key, _JobState())
        st.last_sent, st.suppressed, st.since, st.latest, st.first = now, 0, 0.0, None, None

    def forget_older_than(self, now: float, age: float) -> None:
        for key in [k for k, v in self.jobs.items() if not v.suppressed and now - v.last_sent > age]:
            del self.jobs[key]


# --------------------------------------------------------------------------- freshness


FRESH, STALE = "fresh", "stale"


@dataclass(frozen=True)
class Freshness:
    key: str  # "receiver/partial/report"
    state: str  # fresh | stale
    last: float | None  # last materialization, epoch seconds
    fail_window: float  # seconds


class FreshnessTracker:
    """Per-asset state across sensor ticks: reports only transitions.

    An asset never materialized counts as stale once ``fail_window`` has passed since the
    tracker first saw it (a pipeline that never ran after deployment is stale too).
    """

    def __init__(self, state: dict[str, Any] | None = None):
        state = state or {}
        self.states: dict[str, str] = dict(state.get("states", {}))
        self.first_seen: dict[str, float] = {k: float(v) for k, v in state.get("first_seen", {}).items()}

    def to_state(self) -> dict[str, Any]:
        return {"states": self.states, "first_seen": self.first_seen}

    def evaluate(
        self, observed: dict[str, tuple[float | None, float]], now: float
    ) -> tuple[list[Freshness], list[Freshness]]:
        """``observed``: key -> (last materialization or None, fail window seconds).
        Returns (turned stale, recovered)."""
        stale, recovered = [], []
        for key, (last, window) in sorted(observed.items()):
            first = self.first_seen.setdefault(key, now)
            reference = last if last is not None else first
            state = STALE if now - reference > window else FRESH
            previous = self.states.get(key, FRESH)
            if state != previous:
                (stale if state == STALE else recovered).append(Freshness(key, state, last, window))
            self.states[key] = state
        for key in [k for k in self.states if k not in observed]:
            self.states.pop(key, None)
            self.first_seen.pop(key, None)
        return stale, recovered


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def freshness_email(location: str, items: list[Freshness], now: float, base_url: str) -> tuple[str, str]:
    """One email for every asset of a location that turned stale (or recovered) in a tick."""
    state = items[0].state
    names = ", ".join(i.key for i in items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
    if state == STALE:
        subject = f"{SUBJECT_PREFIX} {location}: STALE {names}"
        head = (
            f"{len(items)} asset(s) of {location} have not been materialized within their freshness window. "
            "Check the schedules/sensors and the latest runs."
        )
    else:
        subject = f"{SUBJECT_PREFIX} {location}: recovered {names}"
        head = f"{len(items)} asset(s) of {location} are fresh again."
    lines = [head, ""]
    for i in items:
        last = (
            f"last materialized {_when(i.last)} ({_age(now - i.last)} ago)"
            if i.last
            else "never materialized"
        )
        lines.append(f"- {i.key}: {last}; window {_age(i.fail_window)}")
        lines.append(f"  {asset_url(base_url, i.key.split('/'))}")
    return subject, "\n".join(lines) + "\n"


def dumps_state(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))
