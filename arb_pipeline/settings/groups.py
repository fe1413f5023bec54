"""The frozen settings objects, one per side and one per shared concern, each built from
the environment by ``from_env()``. Fields name the Setting they hold (table.py); what is
derived from several settings is a property here."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from arb_pipeline.settings import table as t
from arb_pipeline.settings.setting import FOLDER_HINT, FromEnv, SettingError, overlap

SMTP_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


@dataclass(frozen=True)
class SharedSettings(FromEnv):
    """What both servers must agree on (the partitions, the catalog file) and share
    (schedules' time zone, freshness and dead-run limits)."""

    catalog: str = t.CATALOG.field()  # the file's content: catalog.current_catalog()
    go_live: datetime = t.GO_LIVE.field()
    partial_minutes: int = t.PARTIAL_MINUTES.field()
    timezone: str = t.TIMEZONE.field()
    stale_partial_minutes: float | None = t.STALE_PARTIAL_MINUTES.field()
    stale_complete_hours: float = t.STALE_COMPLETE_HOURS.field()
    dead_run_silence_seconds: float = t.DEAD_RUN_SILENCE_SECONDS.field()

    @property
    def partial_fail_window(self) -> timedelta:
        minutes = self.stale_partial_minutes or 3 * self.partial_minutes
        return timedelta(minutes=minutes)

    @property
    def complete_fail_window(self) -> timedelta:
        return timedelta(hours=self.stale_complete_hours)


@dataclass(frozen=True)
class MailSettings(FromEnv):
    """Where alert emails go and how they are sent (ops/alerts.py sends them)."""

    admins: tuple[str, ...] = t.ADMINS.field()
    host: str = t.SMTP_HOST.field()
    port: int | None = t.SMTP_PORT.field()  # None: by security
    security: str = t.SMTP_SECURITY.field()
    user: str = t.SMTP_USER.field()
    password: str = t.SMTP_PASSWORD.field()
    mail_from: str = t.MAIL_FROM.field()
    ui_base_url: str = t.UI_BASE_URL.field()
    interval_minutes: float = t.ALERT_INTERVAL_MINUTES.field()
    timeout: float = 20.0

    def __post_init__(self):
        # Objects built in code (tests, the Dagster resource) pass through the same parse.
        for name, setting in (("security", t.SMTP_SECURITY), ("interval_minutes", t.ALERT_INTERVAL_MINUTES)):
            object.__setattr__(self, name, setting.parse_text(str(getattr(self, name))))
        if self.port is None:
            object.__setattr__(self, "port", SMTP_PORTS[self.security])

    @property
    def enabled(self) -> bool:
        return bool(self.admins)

    @property
    def sender_address(self) -> str:
        return self.mail_from or f"arb_pipeline@{socket.getfqdn()}"


@dataclass(frozen=True)
class DestinationSettings(FromEnv):
    """Where the sender publishes backups: a local folder or the receiver over SFTP."""

    kind: str = t.TRANSPORT.field()
    local_dir: str = t.INBOX_DIR.field()
    host: str = t.SFTP_HOST.field()
    port: int = t.SFTP_PORT.field()
    username: str = t.SFTP_USER.field()
    key_file: str = t.SFTP_KEY_FILE.field()
    key_passphrase: str = t.SFTP_KEY_PASSPHRASE.field()
    known_hosts_file: str = t.SFTP_KNOWN_HOSTS.field()
    remote_dir: str = t.SFTP_REMOTE_DIR.field()
    io_timeout: int = t.SFTP_IO_TIMEOUT.field()
    min_free_mb: float = t.REMOTE_MIN_FREE_MB.field()

    def missing_sftp(self) -> list[str]:
        """The SFTP settings the sftp transport needs and that are not set."""
        needed = (
            (t.SFTP_HOST, self.host),
            (t.SFTP_USER, self.username),
            (t.SFTP_KEY_FILE, self.key_file),
            (t.SFTP_KNOWN_HOSTS, self.known_hosts_file),
            (t.SFTP_REMOTE_DIR, self.remote_dir),
        )
        return [s.name for s, value in needed if not value]


@dataclass(frozen=True)
class SenderSettings(FromEnv):
    """The sender (TranSapp's server): its database, what goes into backups, when they run."""

    dsn: str = t.SENDER_DSN.field()
    sender_id: str = t.SENDER_ID.field()
    media_dir: str = t.SENDER_MEDIA_DIR.field()
    staging_dir: str = t.STAGING_DIR.field()
    max_commit_delay_minutes: int = t.MAX_COMMIT_DELAY_MINUTES.field()
    max_clock_skew_minutes: int = t.MAX_CLOCK_SKEW_MINUTES.field()
    include_personal_columns: bool = t.INCLUDE_PERSONAL_COLUMNS.field()
    pg_dump: str = t.PG_DUMP.field()
    complete_fingerprints: bool = t.COMPLETE_FINGERPRINTS.field()
    partial_delay_minutes: int = t.PARTIAL_DELAY_MINUTES.field()
    complete_at: time = t.COMPLETE_AT.field()
    connectivity_cron: str = t.CONNECTIVITY_CRON.field()
    partial_source: str = t.PARTIAL_SOURCE.field()

    @classmethod
    def from_env(cls, environ=None, problems: list | None = None):
        sender = super().from_env(environ, problems)
        error = staging_overlap(sender.staging_dir, environ)
        if error and problems is None:
            raise error
        if error:
            problems.append(error)
        return sender


def staging_overlap(staging: str, environ=None) -> SettingError | None:
    """ARB_STAGING_DIR may not be, hold or lie inside the inbox or a media folder: the
    pipeline creates and removes folders there."""
    for setting in (t.INBOX_DIR, t.SENDER_MEDIA_DIR, t.RECEIVER_MEDIA_DIR):
        other = setting.raw(environ)
        how = overlap(staging, other) if other else None
        if how:
            name = t.STAGING_DIR.name
            problem = f"{name}={staging!r} {how} the folder of {setting.name} ({other})"
            return SettingError(name, problem, FOLDER_HINT)
    return None


@dataclass(frozen=True)
class ReceiverSettings(FromEnv):
    """The receiver (TranSappViz's server): its database, folders, limits, drill, postprocessing."""

    dsn: str = t.RECEIVER_DSN.field()
    inbox_dir: str = t.INBOX_DIR.field()
    media_dir: str = t.RECEIVER_MEDIA_DIR.field()
    quarantine_dir: str = t.QUARANTINE_DIR.field()
    min_free_mb: float = t.MIN_FREE_MB.field()
    complete_retention_days: float = t.BKPS_LIFETIME.field()
    retry_after_seconds: int = t.RETRY_AFTER_SECONDS.field()
    max_delete_share: float = t.MAX_DELETE_SHARE.field()
    delete_guard_min_rows: int = t.DELETE_GUARD_MIN_ROWS.field()
    max_clock_ahead_seconds: int = t.MAX_CLOCK_AHEAD_SECONDS.field()  # read where used (receive/plausible.py)
    max_manifest_bytes: int = t.MAX_MANIFEST_BYTES.field()  # read where used (receive/inbox.py)
    drill_dsn: str = t.DRILL_DSN.field()
    drill_at: time = t.DRILL_AT.field()
    psql: str = t.PSQL.field()
    local_timezone: str = t.LOCAL_TIMEZONE.field()
    direction_max_gap_minutes: int = t.DIRECTION_MAX_GAP_MINUTES.field()


@dataclass(frozen=True)
class DagsterInstanceSettings(FromEnv):
    """Dagster's own settings (read by Dagster from dagster.yaml); ``arb check`` checks them."""

    home: str = t.DAGSTER_HOME.field()
    pg_host: str = t.DAGSTER_PG_HOST.field()
    pg_port: int = t.DAGSTER_PG_PORT.field()
    pg_username: str = t.DAGSTER_PG_USERNAME.field()
    pg_password: str = t.DAGSTER_PG_PASSWORD.field()
    pg_db: str = t.DAGSTER_PG_DB.field()


@dataclass(frozen=True)
class CaptureSettings(FromEnv):
    """The sender's change-capture slot: its name, its publication, and the WAL it may hold back."""

    slot: str = t.CAPTURE_SLOT.field()
    publication: str = t.CAPTURE_PUBLICATION.field()
    max_lag_mb: float = t.CAPTURE_MAX_LAG_MB.field()


GROUPS = (
    SharedSettings,
    MailSettings,
    DestinationSettings,
    SenderSettings,
    ReceiverSettings,
    CaptureSettings,
)


def role_dsn(role: str, environ=None) -> str:
    """The database DSN setting of a role (``arb migrate``'s default)."""
    return {"sender": t.SENDER_DSN, "receiver": t.RECEIVER_DSN}[role].read(environ)


__all__ = [
    "DagsterInstanceSettings",
    "DestinationSettings",
    "MailSettings",
    "ReceiverSettings",
    "SenderSettings",
    "SharedSettings",
    "role_dsn",
]
