"""Media files (report images): bundled into one tar on the sender, installed on the receiver.

Sender: :func:`bundle_media` (the files a partial's rows reference) and
:func:`bundle_all_media` (every file, for a complete backup) stream the files into one
uncompressed tar in the staging folder (images don't compress), hashing each file while
it is copied, so each file is read once and never held in memory. A referenced file that
is absent or unsafe is listed as missing, with a warning, never a crash: the rows still
go through.

Receiver: :func:`install_media` reads the tar with ``tarfile`` but never extracts with
it. Every member must be a regular file with a safe relative name that is listed in the
manifest; all members are staged to temporary files beside their destination and
verified (size, sha256) before any is renamed into place, so a bad bundle installs
nothing. An existing file is never overwritten: same content is "identical", different
content is kept and the new file is put aside as a conflict for the caller to report.
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
from typing import BinaryIO, Iterable

from arb_pipeline.fsutil import fsync_dir
from arb_pipeline.errors import ArbError
from arb_pipeline.package.manifest import _SAFE_NAME, FileEntry, MediaEntry, MissingMedia
from arb_pipeline.package.writer import StagedBackup

log = logging.getLogger(__name__)

BUNDLE_NAME = "media.tar"
CHUNK = 1 << 20
FILE_MODE = 0o644
DIR_MODE = 0o755
PART_SUFFIX = ".part"
CONFLICT_INFIX = ".conflict-"
_MAX_WARNINGS = 50          # per bundle; the rest are summed up in one line

NOT_FOUND = "not found in media folder"
UNSAFE_NAME = "unsafe name"
OUTSIDE = "unsafe name: resolves outside the media folder"
NOT_REGULAR = "not a regular file"
SYMLINK_SKIPPED = "symlink: not bundled"
TOO_DEEP = "unsafe name: folder nested more than one level deep (not bundled)"


class MediaError(ArbError):
    """A media folder or media bundle is unusable; the message names the file and the fix.

    ``quarantine`` says whether the bundle itself is bad (move the backup aside) or the
    receiver's setting is wrong (the backup waits in the inbox for the next try)."""

    def __init__(self, message: str, *, quarantine: bool = True):
        super().__init__(message)
        self.quarantine = quarantine


@dataclass(frozen=True)
class MediaBundle:
    entry: FileEntry | None                     # the tar in the staging folder; None when no files
    files: list[MediaEntry] = field(default_factory=list)
    missing: list[MissingMedia] = field(default_factory=list)


@dataclass(frozen=True)
class InstallResult:
    installed: list[str] = field(default_factory=list)        # new files now in the media folder
    identical: list[str] = field(default_factory=list)        # already there with the same sha256
    conflicts: list["MediaConflict"] = field(default_factory=list)


@dataclass(frozen=True)
class MediaConflict:
    name: str               # the existing file, left untouched
    existing_sha256: str | None   # None when the existing path is not a regular file
    new_sha256: str
    kept_as: str            # where the new file was put, relative to the media folder


def is_safe_name(name: str) -> bool:
    """The manifest's rule for media names (at most one folder level), minus "." and ".."."""
    return (isinstance(name, str) and bool(_SAFE_NAME.match(name))
            and not any(part in (".", "..") for part in name.split("/")))


# ======================================================================== sender side

def bundle_media(media_dir: Path, names: Iterable[str], staged: StagedBackup,
                 bundle_name: str = BUNDLE_NAME) -> MediaBundle:
    """Bundle the named files of ``media_dir`` (names as rows hold them) into ``bundle_name``.

    Names are deduplicated and sorted; empty names are ignored. A name that is unsafe, absent
    or not a regular file is listed in ``missing`` (with a warning) and not bundled. The
    tar's FileEntry (kind "media", rows = number of files) is added to ``staged``.
    """
    root = _media_root(media_dir)
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
    root = _media_root(media_dir)
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
                    if prefix:          # a folder inside a folder: its files can't have safe names
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


def _media_root(media_dir: Path, label: str = "media folder") -> str:
    path = Path(media_dir)
    if not path.is_dir():
        raise MediaError(f"{label} {str(path)!r} does not exist or is not a folder: "
                         f"check the media_dir setting, or create the folder", quarantine=False)
    return os.path.realpath(path)


def _inside(root: str, path: str) -> bool:
    return path != root and os.path.commonpath([root, path]) == root


def _check_sender_name(root: str, name: str) -> str | None:
    """Why ``name`` can't be bundled, or None. A cheap first pass; opening re-checks."""
    if not is_safe_name(name):
        return UNSAFE_NAME
    path = os.path.join(root, name)
    if not os.path.lexists(path):
        return NOT_FOUND
    real = os.path.realpath(path)
    if not _inside(root, real):
        return OUTSIDE
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return NOT_FOUND          # a dangling symlink
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return NOT_REGULAR
    return None


def _open_for_bundle(root: str, name: str) -> tuple[BinaryIO | None, os.stat_result | None, str | None]:
    """Open a media file for reading, refusing anything that isn't a regular file inside root."""
    real = os.path.realpath(os.path.join(root, name))
    if not _inside(root, real):
        return None, None, OUTSIDE
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)   # O_NONBLOCK: a FIFO planted in the folder can't hang us
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
        while len(data) < n:        # raw reads may come back short
            more = self._fh.read(n - len(data))
            if not more:
                raise MediaError(f"media file {self._name!r} shrank while it was being bundled "
                                 f"(is something rewriting it?); run the backup again")
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


def _write_bundle(root: str, candidates: list[str], missing: list[MissingMedia], staged: StagedBackup,
                  bundle_name: str, media_dir: Path) -> MediaBundle:
    files: list[MediaEntry] = []
    if candidates:
        with staged.binary_file(bundle_name) as out:
            with tarfile.TarFile(fileobj=_TellingSink(out), mode="w", format=tarfile.PAX_FORMAT,
                                 copybufsize=CHUNK) as tar:
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
        if not files:       # every candidate vanished between the check and the open
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
        entry = staged.add_entry(FileEntry(name=bundle_name, kind="media", bytes=size, sha256=digest,
                                           rows=len(files)))
    return MediaBundle(entry, files, missing)


# ====================================================================== receiver side

@dataclass
class _Staged:
    name: str
    dest: str           # absolute destination path
    temp: str           # absolute temporary path, same folder
    sha256: str


def install_media(bundle_path: Path, expected: Iterable[MediaEntry], media_dir: Path) -> InstallResult:
    """Install a verified media bundle into ``media_dir``; all-or-nothing up to the renames.

    Raises MediaError, having installed nothing, when the bundle holds a member that isn't
    a regular file, has an unsafe name, isn't in ``expected`` or appears twice, when a
    member's size or sha256 differs from ``expected``, or when an expected file is absent.
    """
    root = _media_root(media_dir, "receiver media folder")
    want: dict[str, MediaEntry] = {}
    for e in expected:
        if not is_safe_name(e.name):
            raise MediaError(f"manifest lists media file {e.name!r}, which is not a safe relative name")
        if e.name in want and want[e.name] != e:
            raise MediaError(f"manifest lists media file {e.name!r} twice with different contents")
        want[e.name] = e

    staged: list[_Staged] = []
    created_dirs: list[str] = []
    ok = False
    try:
        try:
            tar = tarfile.open(bundle_path, mode="r:")
        except (tarfile.TarError, OSError) as exc:
            raise MediaError(f"media bundle {str(bundle_path)!r} is not a readable uncompressed tar "
                             f"({exc}); the backup is damaged: quarantine it") from None
        with tar:
            seen: set[str] = set()
            try:
                for member in tar:
                    _check_member(member, want, seen, bundle_path)
                    seen.add(member.name)
                    staged.append(_stage_member(tar, member, want[member.name], root, created_dirs, bundle_path))
            except tarfile.TarError as exc:
                raise MediaError(f"media bundle {str(bundle_path)!r} is a damaged tar ({exc}): "
                                 f"quarantine the backup") from None
        absent = sorted(set(want) - seen)
        if absent:
            more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
            raise MediaError(f"media bundle {str(bundle_path)!r} lacks {len(absent)} file(s) its manifest "
                             f"lists: {', '.join(absent[:5])}{more}; the backup is damaged: quarantine it")
        _fsync_files([s.temp for s in staged])
        result = _put_in_place(staged, root)
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


def _check_member(member: tarfile.TarInfo, want: dict[str, MediaEntry], seen: set[str], bundle) -> None:
    where = f"media bundle {str(bundle)!r}"
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        kind = {tarfile.SYMTYPE: "a symlink", tarfile.LNKTYPE: "a hard link", tarfile.DIRTYPE: "a folder",
                tarfile.CHRTYPE: "a device", tarfile.BLKTYPE: "a device", tarfile.FIFOTYPE: "a FIFO",
                tarfile.GNUTYPE_SPARSE: "a sparse file"}.get(member.type, f"of tar type {member.type!r}")
        raise MediaError(f"{where}: member {member.name!r} is {kind}, not a regular file: "
                         f"refusing the bundle (quarantine the backup)")
    if os.path.isabs(member.name) or not is_safe_name(member.name):
        raise MediaError(f"{where}: member {member.name!r} has an unsafe name (absolute, '..' or "
                         f"characters outside [A-Za-z0-9_.-]): refusing the bundle (quarantine the backup)")
    if member.name in seen:
        raise MediaError(f"{where}: member {member.name!r} appears twice: refusing the bundle")
    if member.name not in want:
        raise MediaError(f"{where}: member {member.name!r} is not listed in the manifest: refusing the bundle")
    if member.size != want[member.name].bytes:
        raise MediaError(f"{where}: member {member.name!r} is {member.size} bytes, the manifest says "
                         f"{want[member.name].bytes}: the backup is damaged, quarantine it")


def _dest_folder(root: str, name: str, created_dirs: list[str]) -> str:
    """The folder a member goes in, created if needed; never a path that leaves root."""
    if "/" not in name:
        return root
    folder = os.path.join(root, name.split("/", 1)[0])
    if os.path.islink(folder) or (os.path.lexists(folder) and not os.path.isdir(folder)):
        raise MediaError(f"receiver media folder entry {folder!r} is not a plain folder (a symlink or a "
                         f"file): refusing to install {name!r} through it; fix the media folder")
    if not os.path.lexists(folder):
        os.mkdir(folder, DIR_MODE)
        created_dirs.append(folder)
    real = os.path.realpath(folder)
    if not _inside(root, real):
        raise MediaError(f"{folder!r} resolves outside the media folder: refusing to install {name!r}")
    return real


def _stage_member(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: MediaEntry, root: str,
                  created_dirs: list[str], bundle) -> _Staged:
    base = os.path.basename(member.name)
    try:
        folder = _dest_folder(root, member.name, created_dirs)
        temp = os.path.join(folder, f".{base[:200]}.{secrets.token_hex(6)}{PART_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except OSError as exc:
        raise MediaError(f"cannot write into the receiver media folder for {member.name!r}: {exc}; "
                         f"check its permissions and free space", quarantine=False) from None
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
            raise MediaError(f"media bundle {str(bundle)!r}: member {member.name!r} does not match the "
                             f"manifest (size {size} vs {entry.bytes}, sha256 {digest.hexdigest()[:12]}… vs "
                             f"{entry.sha256[:12]}…): the backup is damaged, quarantine it")
        os.utime(temp, (member.mtime, member.mtime))
    except BaseException as exc:
        _unlink_quietly(temp)
        if isinstance(exc, OSError):
            # The receiver's disk, not the backup (it was verified): the backup waits in the inbox.
            raise MediaError(f"cannot stage media file {member.name!r} in the receiver media folder: {exc}; "
                             f"check its permissions and free space", quarantine=False) from None
        raise
    return staged


def _put_in_place(staged: list[_Staged], root: str) -> InstallResult:
    result = InstallResult()
    folders = set()
    for s in staged:
        folders.add(os.path.dirname(s.dest))
        if _link_new(s.temp, s.dest):
            result.installed.append(s.name)
            continue
        existing = _sha256_of_regular(s.dest)
        if existing == s.sha256:
            result.identical.append(s.name)
            continue
        kept = f"{s.name}{CONFLICT_INFIX}{s.sha256[:12]}"
        os.replace(s.temp, os.path.join(root, kept))   # same content if it was already there
        result.conflicts.append(MediaConflict(s.name, existing, s.sha256, kept))
        log.warning("media: %r already exists with different content; kept it, put the new file "
                    "aside as %r", s.name, kept)
    for folder in folders:
        fsync_dir(folder)
    return result


def _link_new(temp: str, dest: str) -> bool:
    """Put temp at dest only if dest doesn't exist (atomic with a hard link); False if it exists."""
    try:
        os.link(temp, dest, follow_symlinks=False)
        return True
    except FileExistsError:
        return False
    except OSError as exc:      # a filesystem without hard links: check, then rename
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    if os.path.lexists(dest):
        return False
    os.replace(temp, dest)
    return True


def _sha256_of_regular(path: str) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None             # a symlink, or unreadable: not ours to judge, keep it
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
        raise MediaError(f"cannot flush staged media files to disk in the receiver media folder: {exc}; "
                         f"check the disk", quarantine=False) from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
