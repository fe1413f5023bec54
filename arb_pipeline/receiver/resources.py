"""The receiver's resources: its database and its folders. The DSN's password comes
from the environment through dg.EnvVar and never shows in the UI or logs."""

import os

import dagster as dg

from arb_pipeline.errors import ConfigError


class ReceiverDatabase(dg.ConfigurableResource):
    """The TranSappViz database."""

    dsn: str

    def checked_dsn(self) -> str:
        if not self.dsn:
            raise ConfigError("ARB_RECEIVER_DSN is empty: set it to the receiver database's libpq DSN")
        return self.dsn


class ReceiverSettings(dg.ConfigurableResource):
    inbox_dir: str  # REMOTE_BKP_FLDR: where the sender's SFTP uploads land
    media_dir: str  # MEDIA_IMAGE on the receiver
    quarantine_dir: str  # bad backups, with a REASON.txt each
    min_free_mb: int = 500  # disk guard: stop loading below this much free space
    partial_retention_days: float = 1.0
    complete_retention_days: float = 4.0  # BKPS_LIFETIME
    max_runs_per_tick: int = 20
    max_attempts: int = 5  # failed loads of one backup are retried up to this many times
    retry_after_seconds: int = 120


def from_environment() -> dict:
    return {
        "receiver_db": ReceiverDatabase(dsn=dg.EnvVar("ARB_RECEIVER_DSN")),
        "receiver_settings": ReceiverSettings(
            inbox_dir=os.environ.get("ARB_INBOX_DIR", "/srv/arb/inbox"),
            media_dir=os.environ.get("ARB_RECEIVER_MEDIA_DIR", "media/reported_images"),
            quarantine_dir=os.environ.get("ARB_QUARANTINE_DIR", "/srv/arb/quarantine"),
            min_free_mb=int(os.environ.get("ARB_MIN_FREE_MB", "500")),
            complete_retention_days=float(os.environ.get("ARB_BKPS_LIFETIME", "4")),
            retry_after_seconds=int(os.environ.get("ARB_RETRY_AFTER_SECONDS", "120")),
        ),
    }
