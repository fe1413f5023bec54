"""Media files (report images) in a backup: the rules both sides share.

A backup carries its media in one uncompressed tar (``media.tar``; images don't compress),
listed in the manifest with a size and sha256 per file. The sender bundles them
(extract/media.py); the receiver installs them all or nothing (receive/media.py). A name is
safe when it is relative, at most one folder deep, with no "." or ".." part.
"""

from __future__ import annotations

import os
from pathlib import Path

from arb_pipeline.errors import ArbError
from arb_pipeline.package.manifest_fields import SAFE_NAME

BUNDLE_NAME = "media.tar"
CHUNK = 1 << 20
FILE_MODE = 0o644
DIR_MODE = 0o755


class MediaError(ArbError):
    """A media bundle is unusable (the backup is moved aside); the message names the file."""

    backup_at_fault = True


class MediaFolderError(MediaError):
    """A media folder is unusable (its setting, permissions, the disk): the backup is fine
    and waits in the inbox for the next try; the message names the folder and the fix."""

    backup_at_fault = False


def is_safe_name(name: str) -> bool:
    """The manifest's rule for media names (at most one folder level), minus "." and ".."."""
    return (
        isinstance(name, str)
        and bool(SAFE_NAME.match(name))
        and not any(part in (".", "..") for part in name.split("/"))
    )


def media_root(media_dir: Path, label: str = "media folder") -> str:
    path = Path(media_dir)
    if not path.is_dir():
        raise MediaFolderError(
            f"{label} {str(path)!r} does not exist or is not a folder: "
            f"check the media_dir setting, or create the folder"
        )
    return os.path.realpath(path)


def inside(root: str, path: str) -> bool:
    return path != root and os.path.commonpath([root, path]) == root
