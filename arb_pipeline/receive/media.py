"""Media on the receiver: a backup's tar installed into the media folder, all or nothing.

:func:`install_media` reads the tar with ``tarfile`` but never extracts with it. Every
member must be a regular file with a safe relative name that is listed in the manifest; all
members are staged to temporary files beside their destination and verified (size, sha256)
before any is renamed into place, so a bad bundle installs nothing. An existing file is never
overwritten: same content is "identical", different content is kept and the new file is put
aside as a conflict for the caller to report, under a name no other file holds (an earlier
kept-aside copy is never replaced). The receiver installs before its database load and calls
:func:`remove_installed` when that load fails, so a backup that doesn't load leaves no media.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from arb_pipeline.fsutil import fsync_dir
from arb_pipeline.ops.disk_guard import DiskFloor
from arb_pipeline.package.manifest import MediaEntry
from arb_pipeline.package.media import (
    CHUNK,
    DIR_MODE,
    FILE_MODE,
    MediaError,
    MediaFolderError,
    inside,
    is_safe_name,
    media_root,
)

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
MEDIA_VOLUME = "media folder"  # its label in the receiver's DiskFloor
CONFLICT_INFIX = ".conflict-"


@dataclass(frozen=True)
class InstallResult:
    installed: list[str] = field(default_factory=list)  # new files now in the media folder
    identical: list[str] = field(default_factory=list)  # already there with the same sha256
    conflicts: list["MediaConflict"] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # every file and folder this install made


@dataclass(frozen=True)
class MediaConflict:
    name: str  # the existing file, left untouched
    existing_sha256: str | None  # None when the existing path is not a regular file
    new_sha256: str
    kept_as: str  # where the new file was put, relative to the media folder


@dataclass
class _Staged:
    name: str
    dest: str  # absolute destination path
    temp: str  # absolute temporary path, same folder
    sha256: str


def install_media(
    bundle_path: Path, expected: Iterable[MediaEntry], media_dir: Path, floor: DiskFloor | None = None
) -> InstallResult:
    """Install a verified media bundle into ``media_dir``; all-or-nothing up to the renames.
    With ``floor``, the whole declared size must fit above the disk floor before anything is
    written, and each file must still fit before it is (DiskSpaceError: nothing installed).

    Raises MediaError, having installed nothing, when the bundle holds a member that isn't
    a regular file, has an unsafe name, isn't in ``expected`` or appears twice, when a
    member's size or sha256 differs from ``expected``, or when an expected file is absent.
    """
    root = media_root(media_dir, "receiver media folder")
    want: dict[str, MediaEntry] = {}
    for e in expected:
        if not is_safe_name(e.name):
            raise MediaError(f"manifest lists media file {e.name!r}, which is not a safe relative name")
        if e.name in want and want[e.name] != e:
            raise MediaError(f"manifest lists media file {e.name!r} twice with different contents")
        want[e.name] = e

    _check_declared_fits(bundle_path, want)
    if floor:
        floor.check({MEDIA_VOLUME: sum(e.bytes for e in want.values())})
    staged: list[_Staged] = []
    created_dirs: list[str] = []
    ok = False
    try:
        try:
            tar = tarfile.open(bundle_path, mode="r:")
        except (tarfile.TarError, OSError) as exc:
            raise MediaError(
                f"media bundle {str(bundle_path)!r} is not a readable uncompressed tar "
                f"({exc}); the backup is damaged: quarantine it"
            ) from None
        with tar:
            seen: set[str] = set()
            try:
                for member in tar:
                    _check_member(member, want, seen, bundle_path)
                    if floor:  # the disk may fill while we write: each file must still fit
                        floor.check({MEDIA_VOLUME: member.size})
                    seen.add(member.name)
                    staged.append(
                        _stage_member(tar, member, want[member.name], root, created_dirs, bundle_path)
                    )
            except tarfile.TarError as exc:
                raise MediaError(
                    f"media bundle {str(bundle_path)!r} is a damaged tar ({exc}): quarantine the backup"
                ) from None
        absent = sorted(set(want) - seen)
        if absent:
            more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
            raise MediaError(
                f"media bundle {str(bundle_path)!r} lacks {len(absent)} file(s) its manifest "
                f"lists: {', '.join(absent[:5])}{more}; the backup is damaged: quarantine it"
            )
        _fsync_files([s.temp for s in staged])
        result = _put_in_place(staged, root)
        result.created[:0] = [os.path.relpath(d, root) for d in created_dirs]  # removed last
        ok = True
        return result
    finally:
        for s in staged:
            _unlink_quietly(s.temp)
        if not ok:
            for d in reversed(created_dirs):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def _check_declared_fits(bundle_path: Path, want: dict[str, MediaEntry]) -> None:
    """An uncompressed tar holds every byte it installs: media declared larger than the bundle
    itself could only come from sparse members (a few KB unpacking to GB), refused here."""
    try:
        occupies = os.stat(bundle_path).st_size
    except OSError:
        return  # opening it says what is wrong
    declared = sum(e.bytes for e in want.values())
    if declared > occupies:
        raise MediaError(
            f"media bundle {str(bundle_path)!r}: the manifest lists {declared} bytes of media but the "
            f"bundle is {occupies} bytes: an uncompressed tar can't install more than it holds; "
            "refusing the bundle (quarantine the backup)"
        )


def _check_member(member: tarfile.TarInfo, want: dict[str, MediaEntry], seen: set[str], bundle) -> None:
    where = f"media bundle {str(bundle)!r}"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        kind = {
            tarfile.SYMTYPE: "a symlink",
            tarfile.LNKTYPE: "a hard link",
            tarfile.DIRTYPE: "a folder",
            tarfile.CHRTYPE: "a device",
            tarfile.BLKTYPE: "a device",
            tarfile.FIFOTYPE: "a FIFO",
            tarfile.GNUTYPE_SPARSE: "a sparse file",
        }.get(member.type, f"of tar type {member.type!r}")
        raise MediaError(
            f"{where}: member {member.name!r} is {kind}, not a regular file: "
            f"refusing the bundle (quarantine the backup)"
        )
    if member.sparse is not None:  # a PAX sparse member: holes unpack to more than it stores
        raise MediaError(
            f"{where}: member {member.name!r} is a sparse file, not a plain regular file: "
            f"refusing the bundle (quarantine the backup)"
        )
    if os.path.isabs(member.name) or not is_safe_name(member.name):
        raise MediaError(
            f"{where}: member {member.name!r} has an unsafe name (absolute, '..' or "
            f"characters outside [A-Za-z0-9_.-]): refusing the bundle (quarantine the backup)"
        )
    if member.name in seen:
        raise MediaError(f"{where}: member {member.name!r} appears twice: refusing the bundle")
    if member.name not in want:
        raise MediaError(
            f"{where}: member {member.name!r} is not listed in the manifest: refusing the bundle"
        )
    if member.size != want[member.name].bytes:
        raise MediaError(
            f"{where}: member {member.name!r} is {member.size} bytes, the manifest says "
            f"{want[member.name].bytes}: the backup is damaged, quarantine it"
        )


def _dest_folder(root: str, name: str, created_dirs: list[str]) -> str:
    """The folder a member goes in, created if needed; never a path that leaves root."""
    if "/" not in name:
        return root
    folder = os.path.join(root, name.split("/", 1)[0])
    if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
        raise MediaError(
            f"receiver media folder entry {folder!r} is not a plain folder (a symlink or a "
            f"file): refusing to install {name!r} through it; fix the media folder"
        )
    if not os.path.lexists(folder):
        os.mkdir(folder, DIR_MODE)
        created_dirs.append(folder)
    real = os.path.realpath(folder)
    if not inside(root, real):
        raise MediaError(f"{folder!r} resolves outside the media folder: refusing to install {name!r}")
    return real


def _stage_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entry: MediaEntry,
    root: str,
    created_dirs: list[str],
    bundle,
) -> _Staged:
    base = os.path.basename(member.name)
    try:
        folder = _dest_folder(root, member.name, created_dirs)
        temp = os.path.join(folder, f".{base[:200]}.{secrets.token_hex(6)}{PART_SUFFIX}")
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            FILE_MODE,
        )
    except OSError as exc:
        raise MediaFolderError(
            f"cannot write into the receiver media folder for {member.name!r}: {exc}; "
            f"check its permissions and free space"
        ) from None
    staged = _Staged(member.name, os.path.join(folder, base), temp, entry.sha256)
    try:
        digest, size = hashlib.sha256(), 0
        src = tar.extractfile(member)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != entry.bytes or digest.hexdigest() != entry.sha256:
            raise MediaError(
                f"media bundle {str(bundle)!r}: member {member.name!r} does not match the "
                f"manifest (size {size} vs {entry.bytes}, sha256 {digest.hexdigest()[:12]}… vs "
                f"{entry.sha256[:12]}…): the backup is damaged, quarantine it"
            )
        os.utime(temp, (member.mtime, member.mtime))
    except BaseException as exc:
        _unlink_quietly(temp)
        if isinstance(exc, OSError):
            # The receiver's disk, not the backup (it was verified): the backup waits in the inbox.
            raise MediaFolderError(
                f"cannot stage media file {member.name!r} in the receiver media folder: {exc}; "
                f"check its permissions and free space"
            ) from None
        raise
    return staged


def _put_in_place(staged: list[_Staged], root: str) -> InstallResult:
    result = InstallResult()
    folders = set()
    for s in staged:
        folders.add(os.path.dirname(s.dest))
        if _link_new(s.temp, s.dest):
            result.installed.append(s.name)
            result.created.append(s.name)
            continue
        existing = _sha256_of_regular(s.dest)
        if existing == s.sha256:
            result.identical.append(s.name)
            continue
        kept = _keep_aside(s, root, result)
        result.conflicts.append(MediaConflict(s.name, existing, s.sha256, kept))
        log.warning(
            "media: %r already exists with different content; kept it, put the new file aside as %r",
            s.name,
            kept,
        )
    for folder in folders:
        fsync_dir(folder)
    return result


def _keep_aside(s: _Staged, root: str, result: InstallResult) -> str:
    """Put a conflicting file beside the existing one under the first free name; a copy
    already there with the same content is reused, one with other content is left alone
    (12 hex digits of sha256 can collide, by chance or by a sender's design)."""
    base = f"{s.name}{CONFLICT_INFIX}{s.sha256[:12]}"
    for n in range(1, 1000):
        kept = base if n == 1 else f"{base}.{n}"
        path = os.path.join(root, kept)
        if _link_new(s.temp, path):
            result.created.append(kept)
            return kept
        if _sha256_of_regular(path) == s.sha256:
            return kept
    raise MediaError(f"media file {s.name!r} has 999 kept-aside copies already: clean up the media folder")


def remove_installed(result: InstallResult, media_dir: Path) -> list[str]:
    """Undo an install whose backup did not load: remove the files and folders it created
    (installed ones and kept-aside copies), newest first. Returns what could not be removed."""
    root = os.path.realpath(media_dir)
    left = []
    for rel in reversed(result.created):
        path = os.path.join(root, rel)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # only if empty: a folder something else filled stays
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("media: could not remove %r after a failed load: %s", path, exc)
            left.append(rel)
    for folder in {os.path.dirname(os.path.join(root, rel)) for rel in result.created}:
        if os.path.isdir(folder):
            fsync_dir(folder)
    return left


def _link_new(temp: str, dest: str) -> bool:
    """Put temp at dest only if dest doesn't exist (atomic with a hard link); False if it exists."""
    try:
        os.link(temp, dest, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as exc:  # a filesystem without hard links: check, then rename
        if exc.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EXDEV,
            errno.EMLINK,
            errno.ENOSYS,
        ):
            raise
    if os.path.lexists(dest):
        return False
    os.replace(temp, dest)
    return True


def _sha256_of_regular(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None  # a symlink, or unreadable: not ours to judge, keep it
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_files(paths: list[str]) -> None:
    """fsync every staged file before any rename. Done together, from a few threads, so the
    filesystem journal commits them in groups: one fsync per file in turn costs ~1.5 ms each."""

    def sync(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    if not paths:
        return
    try:
        with ThreadPoolExecutor(max_workers=min(16, len(paths)), thread_name_prefix="media-fsync") as pool:
            list(pool.map(sync, paths))
    except OSError as exc:
        raise MediaFolderError(
            f"cannot flush staged media files to disk in the receiver media folder: {exc}; check the disk"
        ) from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
