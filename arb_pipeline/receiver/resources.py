"""The receiver's resources: its database and its folders, from its settings
(docs/settings.md). The DSN's password comes from the environment through dg.EnvVar and
never shows in the UI or logs."""

from typing import ClassVar

import dagster as dg

from arb_pipeline import settings
from arb_pipeline.dagster_common.database import Database

# A day of 5-minute partials: the most backups one run loads, from the sensor or a UI backfill.
BACKUPS_PER_RUN = 288


class ReceiverDatabase(Database):
    """The TranSappViz database."""

    setting: ClassVar[settings.Setting] = settings.RECEIVER_DSN


class ReceiverSettings(dg.ConfigurableResource):
    """settings.ReceiverSettings as a Dagster resource (each field's meaning: docs/settings.md)."""

    inbox_dir: str
    media_dir: str
    quarantine_dir: str
    min_free_mb: float = settings.MIN_FREE_MB.default_value
    partial_retention_days: float = 1.0
    complete_retention_days: float = settings.BKPS_LIFETIME.default_value
    max_runs_per_tick: int = 20
    max_backups_per_run: int = BACKUPS_PER_RUN  # a catch-up's consecutive backups load in one run
    max_attempts: int = 5  # failed loads of one backup are retried up to this many times
    retry_after_seconds: int = settings.RETRY_AFTER_SECONDS.default_value
    max_delete_share: float = settings.MAX_DELETE_SHARE.default_value
    delete_guard_min_rows: int = settings.DELETE_GUARD_MIN_ROWS.default_value


def from_environment(receiver: settings.ReceiverSettings | None = None) -> dict:
    receiver = receiver or settings.ReceiverSettings.from_env()
    return {
        "receiver_db": ReceiverDatabase.from_setting(),
        "receiver_settings": ReceiverSettings(
            inbox_dir=receiver.inbox_dir,
            media_dir=receiver.media_dir,
            quarantine_dir=receiver.quarantine_dir,
            min_free_mb=receiver.min_free_mb,
            complete_retention_days=receiver.complete_retention_days,
            retry_after_seconds=receiver.retry_after_seconds,
            max_delete_share=receiver.max_delete_share,
            delete_guard_min_rows=receiver.delete_guard_min_rows,
        ),
    }
