"""The sender's resources: its database, its settings, and where backups go.

Secrets (the DSN's password, the key file's passphrase) come from the environment
through dg.EnvVar, so they never show in the UI or in run logs.
"""

from pathlib import Path
from typing import ClassVar, Optional

import dagster as dg
from pydantic import PrivateAttr

from arb_pipeline import settings
from arb_pipeline.dagster_common.database import Database
from arb_pipeline.errors import ConfigError
from arb_pipeline.transport import LocalFolderTransport, Transport


class SenderDatabase(Database):
    """The TranSapp database (the original's DATABASES['default'])."""

    setting: ClassVar[settings.Setting] = settings.SENDER_DSN


class SenderSettings(dg.ConfigurableResource):
    """settings.SenderSettings as a Dagster resource (each field's meaning: docs/settings.md)."""

    sender_id: str = ""  # default: host name
    media_dir: str
    staging_dir: str
    max_commit_delay_minutes: int = settings.MAX_COMMIT_DELAY_MINUTES.default_value
    max_clock_skew_minutes: int = settings.MAX_CLOCK_SKEW_MINUTES.default_value
    include_personal_columns: bool = settings.INCLUDE_PERSONAL_COLUMNS.default_value
    pg_dump: str = settings.PG_DUMP.default
    zstd_level: int = 1  # completes: level 1 keeps the dump as fast as pg_dump
    complete_fingerprints: bool = settings.COMPLETE_FINGERPRINTS.default_value
    partial_source: str = settings.PARTIAL_SOURCE.default  # timestamp | capture
    capture_slot: str = settings.CAPTURE_SLOT.default
    capture_publication: str = settings.CAPTURE_PUBLICATION.default

    def overlap(self):
        from datetime import timedelta

        return timedelta(minutes=self.max_commit_delay_minutes + self.max_clock_skew_minutes)

    def resolved_sender_id(self) -> str:
        from arb_pipeline.extract.build import default_sender_id

        return self.sender_id or default_sender_id()


class BackupDestination(dg.ConfigurableResource):
    """The receiver's inbox: a local folder (demo, one machine) or SFTP (production);
    settings.DestinationSettings as a Dagster resource."""

    kind: str = settings.TRANSPORT.default
    local_dir: str = ""  # kind=local: the inbox folder
    host: str = ""
    port: int = settings.SFTP_PORT.default_value
    username: str = ""
    key_file: str = ""
    key_passphrase: str = ""
    known_hosts_file: str = ""
    remote_dir: str = ""
    connect_timeout: int = 10
    io_timeout: int = settings.SFTP_IO_TIMEOUT.default_value
    retries: int = 4
    min_free_mb: float = settings.REMOTE_MIN_FREE_MB.default_value

    def open(self, retries: int | None = None) -> Transport:
        """The transport; ``retries`` overrides the setting (a preflight check fails fast)."""
        if self.kind == "local":
            if not self.local_dir:
                raise ConfigError(
                    "ARB_INBOX_DIR is empty: set the receiver's inbox folder for the local transport"
                )
            return LocalFolderTransport(Path(self.local_dir))
        if self.kind == "sftp":
            from arb_pipeline.transport.sftp import SftpTransport

            missing = settings.DestinationSettings(
                host=self.host,
                username=self.username,
                key_file=self.key_file,
                known_hosts_file=self.known_hosts_file,
                remote_dir=self.remote_dir,
            ).missing_sftp()
            if missing:
                raise ConfigError(f"SFTP transport needs {', '.join(missing)}")
            return SftpTransport(
                host=self.host,
                port=self.port,
                username=self.username,
                key_file=self.key_file,
                known_hosts_file=self.known_hosts_file,
                remote_dir=self.remote_dir,
                key_passphrase=self.key_passphrase or None,
                connect_timeout=self.connect_timeout,
                io_timeout=self.io_timeout,
                retries=self.retries if retries is None else retries,
            )
        raise ConfigError(f"ARB_TRANSPORT={self.kind!r}: use 'local' or 'sftp'")


class BackupPublisher(dg.ConfigurableIOManager):
    """Publishes a staged backup on the receiver: every file atomically, the manifest last.

    Table and media assets return parts of a local staged backup (BackupPart); the
    package asset returns the whole (BuiltBackup) and comes last, so its manifest is
    the last file published. This IO manager is the only thing that talks to the
    destination.
    """

    destination: dg.ResourceDependency[BackupDestination]
    _transport: Optional[Transport] = PrivateAttr(default=None)

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        from arb_pipeline.extract.build import BackupPart, publish

        if self._transport is None:
            self._transport = self.destination.open()
        if isinstance(obj, BackupPart):
            built, published = obj.built, publish(self._transport, obj.built, obj.names)
        else:  # the whole package: whatever is left, then the manifest
            built, published = obj, publish(self._transport, obj)
        context.add_output_metadata(
            {
                "remote_folder": dg.MetadataValue.text(built.remote_dir),
                "files_published": dg.MetadataValue.json(published),
                "transport": self.destination.kind,
            }
        )

    def load_input(self, context: dg.InputContext):
        raise dg.Failure("published backups live on the receiver; nothing on the sender reads them back")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def from_environment(sender: settings.SenderSettings | None = None) -> dict:
    """The sender's resources, from its settings (docs/settings.md); the secrets through dg.EnvVar."""
    sender = sender or settings.SenderSettings.from_env()
    d = settings.DestinationSettings.from_env()
    capture = settings.CaptureSettings.from_env()
    destination = BackupDestination(
        kind=d.kind,
        local_dir=d.local_dir,
        host=d.host,
        port=d.port,
        username=d.username,
        key_file=d.key_file,
        key_passphrase=dg.EnvVar(settings.SFTP_KEY_PASSPHRASE.name) if d.key_passphrase else "",
        known_hosts_file=d.known_hosts_file,
        remote_dir=d.remote_dir,
        io_timeout=d.io_timeout,
        min_free_mb=d.min_free_mb,
    )
    return {
        "sender_db": SenderDatabase.from_setting(),
        "sender_settings": SenderSettings(
            sender_id=sender.sender_id,
            media_dir=sender.media_dir,
            staging_dir=sender.staging_dir,
            max_commit_delay_minutes=sender.max_commit_delay_minutes,
            max_clock_skew_minutes=sender.max_clock_skew_minutes,
            include_personal_columns=sender.include_personal_columns,
            pg_dump=sender.pg_dump,
            complete_fingerprints=sender.complete_fingerprints,
            partial_source=sender.partial_source,
            capture_slot=capture.slot,
            capture_publication=capture.publication,
        ),
        "backup_destination": destination,
        "backup_publisher": BackupPublisher(destination=destination),
    }
