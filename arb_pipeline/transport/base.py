"""The transport interface. Publishing is atomic: a file is written under a temporary
name (``.<name>.<random>.part``) in its final folder and renamed when complete, so a
reader of the folder sees either nothing or the whole file under its final name."""

from __future__ import annotations

import secrets
from pathlib import Path, PurePosixPath
from typing import Protocol

from arb_pipeline.errors import ArbError

TEMP_PREFIX = "."
TEMP_SUFFIX = ".part"


class TransportError(ArbError):
    """Moving a file failed; the message names the setting or remote path involved."""


def is_temporary_name(name: str) -> bool:
    """Upload-in-progress names, which readers must ignore."""
    base = PurePosixPath(name).name
    return base.startswith(TEMP_PREFIX) and base.endswith(TEMP_SUFFIX)


def temporary_name(remote_name: str) -> str:
    path = PurePosixPath(remote_name)
    return str(path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"))


def check_relative(remote_name: str) -> PurePosixPath:
    """Remote names are relative to the transport's root and may not climb out of it."""
    path = PurePosixPath(remote_name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise TransportError(f"remote name {remote_name!r} must be a relative path inside the remote folder")
    return path


class Transport(Protocol):
    """What the sender's IO manager and the tests need from a destination."""

    def publish(self, local_path: Path, remote_name: str) -> None:
        """Copy a local file to ``remote_name`` atomically, creating folders as needed."""

    def listdir(self, remote_dir: str = "") -> list[str]:
        """Names in a remote folder (temporary upload names included); [] if it does not exist."""

    def read_bytes(self, remote_name: str) -> bytes:
        """A whole remote file (for small files: manifests, tests)."""

    def remove(self, remote_name: str) -> None:
        """Delete a remote file; missing is fine."""

    def check_writable(self) -> None:
        """Raise TransportError naming the setting when the remote folder can't be written."""

    def close(self) -> None:
        """Release connections."""
