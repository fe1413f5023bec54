"""Every setting, once: environment name, default, parse, side, what it does and the
original tool's name. The order is the order of docs/settings.md."""

from __future__ import annotations

from arb_pipeline.settings.setting import (
    Setting,
    addresses,
    catalog_file,
    clock,
    cron,
    divisor_of_60,
    flag,
    number,
    one_of,
    optional,
    scratch_folder,
    slot_name,
    text,
    timezone_name,
    utc_date,
    whole,
)

# --------------------------------------------------------------------------- both sides
ROLE = Setting(
    "ARB_ROLE",
    "",
    one_of("", "sender", "receiver", "both"),
    "both",
    "which side this server is: the systemd units load `arb_pipeline.$ARB_ROLE.definitions`, "
    "`arb check` checks that side ('both': a one-machine setup; unset: guessed from the DSNs set)",
)
PARTIAL_MINUTES = Setting(
    "ARB_PARTIAL_MINUTES",
    "5",
    divisor_of_60,
    "both",
    "length of a partial backup's window in minutes (divides 60); the same on both servers",
    original="`TIME`",
)
GO_LIVE = Setting(
    "ARB_GO_LIVE",
    "2026-11-01",
    utc_date,
    "both",
    "first partial partition, UTC (YYYY-MM-DD or YYYY-MM-DD-HH-MM); completes start the day before; "
    "changing it later orphans partition keys",
)
TIMEZONE = Setting(
    "ARB_TIMEZONE",
    "America/Santiago",
    timezone_name,
    "both",
    "time zone of the daily schedules (ARB_COMPLETE_AT, ARB_DRILL_AT)",
)
INBOX_DIR = Setting(
    "ARB_INBOX_DIR",
    "/srv/arb/inbox",
    text,
    "both",
    "the receiver's inbox, where backups arrive (also the local transport's folder, and the "
    "default of `arb requeue` and `arb restore`)",
    original="`REMOTE_BKP_FLDR`",
)
CATALOG = Setting(
    "ARB_CATALOG",
    "",
    catalog_file,
    "both",
    "the catalog file: which tables travel and how (docs/catalog.md); the same file on both servers",
    default_text="the packaged TranSapp catalog, arb_pipeline/catalogs/transapp.toml",
)
ADMINS = Setting(
    "ARB_ADMINS",
    "",
    addresses,
    "both",
    "alert recipients, comma-separated (`Name <a@b>` allowed); unset: alerts go nowhere",
    original="`ADMINS`",
    default_text="required",
)
SMTP_HOST = Setting(
    "ARB_SMTP_HOST", "localhost", text, "both", "mail server for alert emails", original="`EMAIL_HOST`"
)
SMTP_SECURITY = Setting(
    "ARB_SMTP_SECURITY",
    "none",
    one_of("none", "starttls", "ssl"),
    "both",
    "`none`, `starttls` or `ssl`",
    original="`EMAIL_USE_TLS`/`_SSL`",
)
SMTP_PORT = Setting(
    "ARB_SMTP_PORT",
    "",
    optional(whole(1)),
    "both",
    "the mail server's port",
    original="`EMAIL_PORT`",
    default_text="25, 587 or 465 by ARB_SMTP_SECURITY",
)
SMTP_USER = Setting(
    "ARB_SMTP_USER",
    "",
    text,
    "both",
    "SMTP login; unset: no login (a local relay)",
    original="`EMAIL_HOST_USER`",
)
SMTP_PASSWORD = Setting(
    "ARB_SMTP_PASSWORD",
    "",
    text,
    "both",
    "SMTP password (secret)",
    original="`EMAIL_HOST_PASSWORD`",
    secret=True,
)
MAIL_FROM = Setting(
    "ARB_MAIL_FROM",
    "",
    text,
    "both",
    "sender address of alert emails",
    original="`SERVER_EMAIL`",
    default_text="arb_pipeline@<fqdn>",
)
UI_BASE_URL = Setting(
    "ARB_UI_BASE_URL",
    "",
    text,
    "both",
    "the Dagster UI's address, for run and asset links in emails (unset: run ids only)",
)
ALERT_INTERVAL_MINUTES = Setting(
    "ARB_ALERT_INTERVAL_MINUTES",
    "60",
    number(0),
    "both",
    "at most one failure email per job per this many minutes",
)
STALE_PARTIAL_MINUTES = Setting(
    "ARB_STALE_PARTIAL_MINUTES",
    "",
    optional(number(0, above=True)),
    "both",
    "a partial asset with no new backup this long is stale (warned at 2/3 of it)",
    default_text="3 × ARB_PARTIAL_MINUTES",
)
STALE_COMPLETE_HOURS = Setting(
    "ARB_STALE_COMPLETE_HOURS",
    "26",
    number(0, above=True),
    "both",
    "a complete asset with no new backup this long is stale",
)
DEAD_RUN_SILENCE_SECONDS = Setting(
    "ARB_DEAD_RUN_SILENCE_SECONDS",
    "60",
    number(0),
    "both",
    "a STARTED run whose process is gone, silent this long, is marked failed",
)
DAGSTER_HOME = Setting(
    "DAGSTER_HOME",
    "",
    text,
    "both",
    "Dagster's instance folder, holding dagster.yaml (unset: a temporary instance)",
)
DAGSTER_PG_HOST = Setting(
    "DAGSTER_PG_HOST", "", text, "both", "the Dagster instance's PostgreSQL (deploy/dagster.postgres.yaml)"
)
DAGSTER_PG_PORT = Setting("DAGSTER_PG_PORT", "5432", whole(1), "both", "its port")
DAGSTER_PG_USERNAME = Setting("DAGSTER_PG_USERNAME", "", text, "both", "its user")
DAGSTER_PG_PASSWORD = Setting("DAGSTER_PG_PASSWORD", "", text, "both", "its password (secret)", secret=True)
DAGSTER_PG_DB = Setting("DAGSTER_PG_DB", "", text, "both", "its database")

# --------------------------------------------------------------------------- sender
SENDER_DSN = Setting(
    "ARB_SENDER_DSN",
    "",
    text,
    "sender",
    "the TranSapp database's libpq DSN (password in the DSN or ~/.pgpass; secret); also the "
    "default of `arb migrate --role sender`, `arb parity`, `arb generate`",
    original="`DATABASES['default']`",
    secret=True,
    default_text="required",
)
SENDER_ID = Setting(
    "ARB_SENDER_ID", "", text, "sender", "names this server in manifests", default_text="host name"
)
SENDER_MEDIA_DIR = Setting(
    "ARB_SENDER_MEDIA_DIR",
    "media/reported_images",
    text,
    "sender",
    "the app's report images",
    original="`MEDIA_IMAGE`",
)
STAGING_DIR = Setting(
    "ARB_STAGING_DIR",
    "/var/tmp/arb_pipeline",
    scratch_folder,
    "sender",
    "local scratch: one folder per run, removed after it; the sweep removes only the pipeline's "
    "own run folders. Refused: /, a home folder, the inbox or a media folder, or a folder holding one",
    original="`TMP_BKP_FLDR`",
)
MAX_COMMIT_DELAY_MINUTES = Setting(
    "ARB_MAX_COMMIT_DELAY_MINUTES",
    "10",
    whole(0),
    "sender",
    "longest app transaction, timestamp to commit (part of the partials' overlap)",
)
MAX_CLOCK_SKEW_MINUTES = Setting(
    "ARB_MAX_CLOCK_SKEW_MINUTES",
    "5",
    whole(0),
    "sender",
    "app servers' clocks vs the database's (part of the partials' overlap)",
)
INCLUDE_PERSONAL_COLUMNS = Setting(
    "ARB_INCLUDE_PERSONAL_COLUMNS", "0", flag, "sender", "1 ships emails and session tokens too"
)
PG_DUMP = Setting(
    "ARB_PG_DUMP",
    "pg_dump",
    text,
    "sender",
    "pg_dump of the server's major version (psql beside it is used too)",
)
COMPLETE_FINGERPRINTS = Setting(
    "ARB_COMPLETE_FINGERPRINTS",
    "0",
    flag,
    "sender",
    "1 adds the sender's per-table digests to completes (a second pass over every row); without "
    "them the receiver's parity check takes its digests from the backup's table files",
)
PARTIAL_DELAY_MINUTES = Setting(
    "ARB_PARTIAL_DELAY_MINUTES",
    "1",
    whole(0),
    "sender",
    "a partial runs this long after its window closes (at most ARB_PARTIAL_MINUTES - 1)",
    original="cron `*/5` partial",
)
COMPLETE_AT = Setting(
    "ARB_COMPLETE_AT",
    "03:30",
    clock,
    "sender",
    "daily complete backup, HH:MM in ARB_TIMEZONE",
    original="cron `30 3 * * *` complete",
)
CONNECTIVITY_CRON = Setting(
    "ARB_CONNECTIVITY_CRON",
    "7 * * * *",
    cron,
    "sender",
    "when the receiver_connectivity check runs (UTC cron)",
    original="`ssh_sftp_checker`",
)
TRANSPORT = Setting(
    "ARB_TRANSPORT",
    "local",
    one_of("local", "sftp"),
    "sender",
    "`sftp` (production) or `local` (a folder on this machine: ARB_INBOX_DIR)",
)
SFTP_HOST = Setting("ARB_SFTP_HOST", "", text, "sender", "the receiver's SSH host", original="`REMOTE_HOST`")
SFTP_PORT = Setting("ARB_SFTP_PORT", "22", whole(1), "sender", "its SSH port")
SFTP_USER = Setting("ARB_SFTP_USER", "", text, "sender", "the SFTP user", original="`REMOTE_USER`")
SFTP_KEY_FILE = Setting(
    "ARB_SFTP_KEY_FILE", "", text, "sender", "the sender's private key (mode 600)", original="`PRIVATE_KEY`"
)
SFTP_KEY_PASSPHRASE = Setting(
    "ARB_SFTP_KEY_PASSPHRASE", "", text, "sender", "the key's passphrase, if any (secret)", secret=True
)
SFTP_KNOWN_HOSTS = Setting(
    "ARB_SFTP_KNOWN_HOSTS",
    "",
    text,
    "sender",
    "known_hosts file holding the receiver's host key",
    original="(fingerprint accepted by hand)",
)
SFTP_REMOTE_DIR = Setting(
    "ARB_SFTP_REMOTE_DIR",
    "",
    text,
    "sender",
    "the inbox as the SFTP user sees it",
    original="`REMOTE_BKP_FLDR`",
)
SFTP_IO_TIMEOUT = Setting(
    "ARB_SFTP_IO_TIMEOUT",
    "30",
    whole(1),
    "sender",
    "seconds without an answer before a transfer is retried",
)
REMOTE_MIN_FREE_MB = Setting(
    "ARB_REMOTE_MIN_FREE_MB",
    "1024",
    number(0),
    "sender",
    "the connectivity check fails below this much room in the receiver's inbox (MB)",
)

# --------------------------------------------------------------------------- receiver
RECEIVER_DSN = Setting(
    "ARB_RECEIVER_DSN",
    "",
    text,
    "receiver",
    "the TranSappViz database's libpq DSN (secret); also the default of "
    "`arb migrate --role receiver`, `arb parity`, `arb zones import`",
    original="— (via `sudo -u postgres`)",
    secret=True,
    default_text="required",
)
RECEIVER_MEDIA_DIR = Setting(
    "ARB_RECEIVER_MEDIA_DIR",
    "media/reported_images",
    text,
    "receiver",
    "the receiver's report images",
    original="`MEDIA_IMAGE`",
)
QUARANTINE_DIR = Setting(
    "ARB_QUARANTINE_DIR",
    "/srv/arb/quarantine",
    text,
    "receiver",
    "bad backups, with a REASON.txt each (`arb quarantined`, `arb requeue`)",
)
MIN_FREE_MB = Setting(
    "ARB_MIN_FREE_MB",
    "500",
    number(0),
    "receiver",
    "disk guard: loads stop below this much free space (MB) on the inbox, media and database volumes",
)
# Bounds on what one backup's table file may become once unpacked (verified as it streams).
MAX_ROW_MB = Setting(
    "ARB_MAX_ROW_MB", "64", number(0, above=True), "receiver", "longest row (line) a table file may hold, MB"
)
MAX_TABLE_MB = Setting(
    "ARB_MAX_TABLE_MB", "65536", number(0, above=True), "receiver", "most a table file may unpack to, MB"
)
MAX_UNPACK_RATIO = Setting(
    "ARB_MAX_UNPACK_RATIO",
    "1000",
    number(1),
    "receiver",
    "most bytes a table file may unpack to per byte it occupies (files under 1 MB unpacked: any ratio)",
)
MAX_TABLE_ROWS = Setting(
    "ARB_MAX_TABLE_ROWS", "1000000000", whole(1), "receiver", "most rows one table file may hold"
)
BKPS_LIFETIME = Setting(
    "ARB_BKPS_LIFETIME",
    "4",
    number(0),
    "receiver",
    "days loaded completes are kept (partials: 1 day)",
    original="`BKPS_LIFETIME`",
)
RETRY_AFTER_SECONDS = Setting(
    "ARB_RETRY_AFTER_SECONDS",
    "120",
    whole(0),
    "receiver",
    "a load that failed for a reason outside the backup is requested again after this (up to 5 times)",
)
MAX_DELETE_SHARE = Setting(
    "ARB_MAX_DELETE_SHARE",
    "0.5",
    number(0),
    "receiver",
    "a complete that would delete more than this share of a table (and ARB_DELETE_GUARD_MIN_ROWS), "
    "or empty it, waits for `arb approve` (tables marked mirror excepted; 1: no guard)",
)
DELETE_GUARD_MIN_ROWS = Setting(
    "ARB_DELETE_GUARD_MIN_ROWS",
    "100",
    whole(0),
    "receiver",
    "deleting fewer rows than this from a table never holds a complete, whatever the share",
)
MAX_CLOCK_AHEAD_SECONDS = Setting(
    "ARB_MAX_CLOCK_AHEAD_SECONDS",
    "300",
    whole(0),
    "receiver",
    "a backup whose snapshot or window is further ahead of the receiver's clock is quarantined (seconds)",
)
MAX_MANIFEST_BYTES = Setting(
    "ARB_MAX_MANIFEST_BYTES",
    "16777216",
    whole(1024),
    "receiver",
    "a bigger manifest.json is quarantined unread (bytes)",
)
DRILL_DSN = Setting(
    "ARB_DRILL_DSN",
    "",
    text,
    "receiver",
    "restore drill: maintenance DSN (dbname=postgres) of a CREATEDB, non-superuser role (secret)",
    secret=True,
)
DRILL_AT = Setting("ARB_DRILL_AT", "06:30", clock, "receiver", "daily restore drill, HH:MM in ARB_TIMEZONE")
PSQL = Setting("ARB_PSQL", "psql", text, "receiver", "psql, which the restore drill runs restore.sql with")
LOCAL_TIMEZONE = Setting(
    "ARB_LOCAL_TIMEZONE",
    "America/Santiago",
    timezone_name,
    "receiver",
    "postprocessing's local time (time periods of events)",
    original="— (`timezone.localtime`)",
)
DIRECTION_MAX_GAP_MINUTES = Setting(
    "ARB_DIRECTION_MAX_GAP_MINUTES",
    "60",
    whole(1),
    "receiver",
    "oldest trip pose that gives a bus event its direction (minutes)",
)

# --------------------------------------------------------------------------- the command line
PROGRESS = Setting(
    "ARB_PROGRESS",
    "",
    one_of("", "0", "1"),
    "arb",
    "1 forces, 0 hides the progress bars of `arb` commands",
    default_text="on a terminal",
)
PARTIAL_SOURCE = Setting(
    "ARB_PARTIAL_SOURCE",
    "timestamp",
    one_of("timestamp", "capture"),
    "sender",
    "what partials ship: `timestamp` (rows whose cursor falls in the window, plus the overlap) or "
    "`capture` (every committed change, from the logical replication slot; needs `arb capture setup`; "
    "completes are then pinned to the slot: docs/change-capture.md)",
)
CAPTURE_SLOT = Setting(
    "ARB_CAPTURE_SLOT",
    "arb_pipeline",
    slot_name,
    "sender",
    "the logical replication slot change capture reads (docs/change-capture.md)",
)
CAPTURE_PUBLICATION = Setting(
    "ARB_CAPTURE_PUBLICATION",
    "arb_pipeline",
    slot_name,
    "sender",
    "the publication of the catalog's tables that change capture decodes",
)
CAPTURE_MAX_LAG_MB = Setting(
    "ARB_CAPTURE_MAX_LAG_MB",
    "1024",
    number(0, above=True),
    "sender",
    "WAL the capture slot may hold back on the sender (unread or retained) before an alert",
)

ALL: tuple[Setting, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Setting))
BY_NAME: dict[str, Setting] = {s.name: s for s in ALL}
