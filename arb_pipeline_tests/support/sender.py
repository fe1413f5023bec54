"""The sender's Dagster resources for tests that materialize its assets."""

from __future__ import annotations

from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher, SenderDatabase, SenderSettings


def sender_resources(dsn: str, media, staging, destination: BackupDestination, **settings) -> dict:
    """Resources of the sender's assets publishing to ``destination``; ``settings``: more
    SenderSettings fields (sender_id, partial_source, ...)."""
    return {
        "sender_db": SenderDatabase(dsn=dsn),
        "sender_settings": SenderSettings(
            media_dir=str(media),
            staging_dir=str(staging),
            pg_dump=str(find_bin_dir() / "pg_dump"),
            **settings,
        ),
        "backup_destination": destination,
        "backup_publisher": BackupPublisher(destination=destination),
    }
