"""Media on the sender: the files a backup's rows reference, streamed into one tar.

:func:`bundle_media` (the files a partial's rows reference) and :func:`bundle_all_media`
(every file, for a complete backup) stream the files into one uncompressed tar in the
staging folder, hashing each file while it is copied, so each file is read once and never
held in memory. A referenced file that is absent or unsafe is listed as missing, with a
warning, never a crash: the rows still go through.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from arb_pipeline.package.manifest import FileEntry, MediaEntry, MissingMedia
from arb_pipeline.package.media import (
    BUNDLE_NAME,
    CHUNK,
    FILE_MODE,
    MediaError,
    inside,
    is_safe_name,
    media_root,
)
from arb_pipeline.package.writer import StagedBackup

log = logging.getLogger(__name__)

_MAX_WARNINGS = 50  # per bundle; the rest are summed up in one line

NOT_FOUND = "not found in media folder"
UNSAFE_NAME = "unsafe name"
OUTSIDE = "unsafe name: resolves outside the media folder"
NOT_REGULAR = "not a regular file"
SYMLINK_SKIPPED = "symlink: not bundled"
TOO_DEEP = "unsafe name: folder nested more than one level deep (not bundled)"


@dataclass(frozen=True)
class MediaBundle:
    entry: FileEntry | None  # the tar in the staging folder; None when no files
    files: list[MediaEntry] = field(default_factory=list)
    missing: list[MissingMedia] = field(default_factory=list)


def bundle_media(
    media_dir: Path, names: Iterable[str], staged: StagedBackup, bundle_name: str = BUNDLE_NAME
) -> MediaBundle:
    """Bundle the named files of ``media_dir`` (names as rows hold them) into ``bundle_name``.

    Names are deduplicated and sorted; empty names are ignored. A name that is unsafe, absent
    or not a regular file is listed in ``missing`` (with a warning) and not bundled. The
    tar's FileEntry (kind "media", rows = number of files) is added to ``staged``.
    """
    root = media_root(media_dir)
    wanted = sorted({n for n in names if n})
    candidates, missing = [], []
    for name in wanted:
        reason = _check_sender_name(root, name)
        if reason:
            missing.append(MissingMedia(name, reason))
        else:
            candidates.append(name)
    return _write_bundle(root, candidates, missing, staged, bundle_name, media_dir)


def bundle_all_media(media_dir: Path, staged: StagedBackup, bundle_name: str = BUNDLE_NAME) -> MediaBundle:
    """Bundle every regular file under ``media_dir`` (for complete backups).

    Symlinks, non-regular files and names that fail the safe-name rule (including files
    in folders nested more than one level deep) are skipped and listed in ``missing``.
    The folder is walked with ``os.scandir`` and files are streamed one at a time, so
    tens of thousands of files need no command line and little memory.
    """
    root = media_root(media_dir)
    candidates, missing = [], []
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, prefix) if prefix else root))
        except OSError as exc:
            missing.append(MissingMedia(prefix or ".", f"folder unreadable: {exc.strerror}"))
            continue
        for entry in entries:
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            try:
                if entry.is_symlink():
                    missing.append(MissingMedia(rel, SYMLINK_SKIPPED))
                elif entry.is_dir(follow_symlinks=False):
                    if prefix:  # a folder inside a folder: its files can't have safe names
                        missing.append(MissingMedia(rel + "/", TOO_DEEP))
                    elif is_safe_name(rel):
                        stack.append(rel)
                    else:
                        missing.append(MissingMedia(rel + "/", UNSAFE_NAME))
                elif not entry.is_file(follow_symlinks=False):
                    missing.append(MissingMedia(rel, NOT_REGULAR))
                elif not is_safe_name(rel):
                    missing.append(MissingMedia(rel, UNSAFE_NAME))
                else:
                    candidates.append(rel)
            except OSError as exc:
                missing.append(MissingMedia(rel, f"unreadable: {exc.strerror}"))
    candidates.sort()
    return _write_bundle(root, candidates, missing, staged, bundle_name, media_dir)


def _check_sender_name(root: str, name: str) -> str | None:
    """Why ``name`` can't be bundled, or None. A cheap first pass; opening re-checks."""
    if not is_safe_name(name):
        return UNSAFE_NAME
    path = os.path.join(root, name)
    if not os.path.lexists(path):
        return NOT_FOUND
    real = os.path.realpath(path)
    if not inside(root, real):
        return OUTSIDE
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return NOT_FOUND  # a dangling symlink
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return NOT_REGULAR
    return None


def _open_for_bundle(root: str, name: str) -> tuple[BinaryIO | None, os.stat_result | None, str | None]:
    """Open a media file for reading, refusing anything that isn't a regular file inside root."""
    real = os.path.realpath(os.path.join(root, name))
    if not inside(root, real):
        return None, None, OUTSIDE
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_NONBLOCK", 0)
        | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(real, flags)  # O_NONBLOCK: a FIFO planted in the folder can't hang us
    except FileNotFoundError:
        return None, None, NOT_FOUND
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, None, OUTSIDE
        return None, None, f"unreadable: {exc.strerror}"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None, NOT_REGULAR
    return os.fdopen(fd, "rb", buffering=0), st, None


class _HashingReader:
    """Reads exactly ``size`` bytes of a file, hashing them; a file that shrinks is an error."""

    def __init__(self, fh: BinaryIO, size: int, name: str):
        self._fh, self._left, self._name = fh, size, name
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._fh.read(n)
        while len(data) < n:  # raw reads may come back short
            more = self._fh.read(n - len(data))
            if not more:
                raise MediaError(
                    f"media file {self._name!r} shrank while it was being bundled "
                    f"(is something rewriting it?); run the backup again"
                )
            data += more
        self._left -= len(data)
        self.sha256.update(data)
        return data


class _TellingSink:
    """tarfile wants ``tell()``; the staging writer only counts, so count here."""

    def __init__(self, out):
        self._out, self._pos = out, 0

    def write(self, data) -> int:
        self._out.write(data)
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos


def _write_bundle(
    root: str,
    candidates: list[str],
    missing: list[MissingMedia],
    staged: StagedBackup,
    bundle_name: str,
    media_dir: Path,
) -> MediaBundle:
    files: list[MediaEntry] = []
    if candidates:
        with staged.binary_file(bundle_name) as out:
            with tarfile.TarFile(
                fileobj=_TellingSink(out), mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
            ) as tar:
                for name in candidates:
                    fh, st, reason = _open_for_bundle(root, name)
                    if fh is None:
                        missing.append(MissingMedia(name, reason))
                        continue
                    with fh:
                        info = tarfile.TarInfo(name)
                        info.type, info.mode, info.size = tarfile.REGTYPE, FILE_MODE, st.st_size
                        info.mtime = int(st.st_mtime)
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        reader = _HashingReader(fh, st.st_size, name)
                        tar.addfile(info, reader)
                        files.append(MediaEntry(name, st.st_size, reader.sha256.hexdigest()))
        if not files:  # every candidate vanished between the check and the open
            staged.path(bundle_name).unlink()
    missing.sort(key=lambda m: m.name)
    for i, m in enumerate(missing):
        if i == _MAX_WARNINGS:
            log.warning("media: %d more media file(s) not bundled from %s", len(missing) - i, media_dir)
            break
        log.warning("media: %r not bundled from %s: %s", m.name, media_dir, m.reason)
    entry = None
    if files:
        size, digest = staged.last_file
        entry = staged.add_entry(
            FileEntry(name=bundle_name, kind="media", bytes=size, sha256=digest, rows=len(files))
        )
    return MediaBundle(entry, files, missing)


# ====================================================================== receiver side
