"""The sender's resources: its database, its settings, and where backups go.

Secrets (the DSN's password, the key file's passphrase) come from the environment
through dg.EnvVar, so they never show in the UI or in run logs.
"""

import os
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from arb_pipeline.errors import ConfigError
from arb_pipeline.transport import LocalFolderTransport, Transport


class SenderDatabase(dg.ConfigurableResource):
    """The TranSapp database (the original's DATABASES['default'])."""

    dsn: str

    def checked_dsn(self) -> str:
        if not self.dsn:
            raise ConfigError("ARB_SENDER_DSN is empty: set it to the TranSapp database's libpq DSN")
        return self.dsn


class SenderSettings(dg.ConfigurableResource):
    sender_id: str = ""  # names this server in manifests; default: host name
    media_dir: str  # MEDIA_IMAGE: the folder of report images
    staging_dir: str  # TMP_BKP_FLDR: local scratch, emptied after every run
    max_commit_delay_minutes: int = 10  # longest app transaction, timestamp to commit
    max_clock_skew_minutes: int = 5  # app servers' clocks vs the database's
    include_personal_columns: bool = False
    pg_dump: str = "pg_dump"
    zstd_level: int = 1  # completes: level 1 keeps the dump as fast as pg_dump
    complete_fingerprints: bool = True  # per-table digests in the complete's manifest (receiver parity check)

    def overlap(self):
        from datetime import timedelta

        return timedelta(minutes=self.max_commit_delay_minutes + self.max_clock_skew_minutes)

    def resolved_sender_id(self) -> str:
        from arb_pipeline.extract.build import default_sender_id

        return self.sender_id or default_sender_id()


class BackupDestination(dg.ConfigurableResource):
    """The receiver's inbox: a local folder (demo, one machine) or SFTP (production)."""

    kind: str = "local"  # "local" or "sftp"
    local_dir: str = ""  # kind=local: the inbox folder
    host: str = ""  # REMOTE_HOST
    port: int = 22
    username: str = ""  # REMOTE_USER
    key_file: str = ""  # PRIVATE_KEY
    key_passphrase: str = ""
    known_hosts_file: str = ""
    remote_dir: str = ""  # REMOTE_BKP_FLDR
    connect_timeout: int = 10
    io_timeout: int = 30  # a transfer that hears nothing this long is retried
    retries: int = 4
    min_free_mb: int = 1024  # the connectivity check fails below this much room in the inbox

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

            missing = [
                name
                for name, value in (
                    ("ARB_SFTP_HOST", self.host),
                    ("ARB_SFTP_USER", self.username),
                    ("ARB_SFTP_KEY_FILE", self.key_file),
                    ("ARB_SFTP_KNOWN_HOSTS", self.known_hosts_file),
                    ("ARB_SFTP_REMOTE_DIR", self.remote_dir),
                )
                if not value
            ]
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


def from_environment() -> dict:
    """Resources configured from ARB_* environment variables (see README, Settings)."""
    env = dg.EnvVar
    transport = os.environ.get("ARB_TRANSPORT", "local")
    destination = BackupDestination(
        kind=transport,
        local_dir=os.environ.get("ARB_INBOX_DIR", ""),
        host=os.environ.get("ARB_SFTP_HOST", ""),
        port=int(os.environ.get("ARB_SFTP_PORT", "22")),
        username=os.environ.get("ARB_SFTP_USER", ""),
        key_file=os.environ.get("ARB_SFTP_KEY_FILE", ""),
        key_passphrase=env("ARB_SFTP_KEY_PASSPHRASE") if os.environ.get("ARB_SFTP_KEY_PASSPHRASE") else "",
        known_hosts_file=os.environ.get("ARB_SFTP_KNOWN_HOSTS", ""),
        remote_dir=os.environ.get("ARB_SFTP_REMOTE_DIR", ""),
        io_timeout=int(os.environ.get("ARB_SFTP_IO_TIMEOUT", "30")),
        min_free_mb=int(os.environ.get("ARB_REMOTE_MIN_FREE_MB", "1024")),
    )
    return {
        "sender_db": SenderDatabase(dsn=env("ARB_SENDER_DSN")),
        "sender_settings": SenderSettings(
            sender_id=os.environ.get("ARB_SENDER_ID", ""),
            media_dir=os.environ.get("ARB_SENDER_MEDIA_DIR", "media/reported_images"),
            staging_dir=os.environ.get("ARB_STAGING_DIR", "/var/tmp/arb_pipeline"),
            max_commit_delay_minutes=int(os.environ.get("ARB_MAX_COMMIT_DELAY_MINUTES", "10")),
            max_clock_skew_minutes=int(os.environ.get("ARB_MAX_CLOCK_SKEW_MINUTES", "5")),
            include_personal_columns=os.environ.get("ARB_INCLUDE_PERSONAL_COLUMNS", "") == "1",
            pg_dump=os.environ.get("ARB_PG_DUMP", "pg_dump"),
            complete_fingerprints=os.environ.get("ARB_COMPLETE_FINGERPRINTS", "1") != "0",
        ),
        "backup_destination": destination,
        "backup_publisher": BackupPublisher(destination=destination),
    }
