"""Verify a backup's files before anything of it is loaded (promises 3, 4 and 6).

:func:`verify_files` (plain Python): the folder holds exactly the files its manifest lists
(upload temporaries aside), each a regular file inside the folder with the manifest's size
and sha256; every table file is a complete zstd frame holding the manifest's row count. A
failure means the backup was altered or truncated: the caller quarantines it. The second
check, whether the receiver's tables can take the backup, is package/schema_check.py.

Media members are not checked here: ``media.install_media`` verifies each member itself;
here ``media.tar`` is one more file with a size and a sha256.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import zstandard

from arb_pipeline.errors import ArbError
from arb_pipeline.package.backup_id import KINDS, parse_backup_id
from arb_pipeline.package.limits import PayloadLimits
from arb_pipeline.package.manifest import (
    MANIFEST_NAME,
    ROW_FILE_KINDS,
    FileEntry,
    Manifest,
    ManifestError,
    frames_sha256,
)
from arb_pipeline.package.reader import SAFE_OPEN, manifest_bytes
from arb_pipeline.settings import MAX_ROW_MB, MAX_TABLE_ROWS
from arb_pipeline.transport.base import is_temporary_name

CHUNK = 1 << 20


class VerifyError(ArbError):
    """A backup failed verification: the backup itself is bad (it is moved aside)."""

    backup_at_fault = True

    def __init__(self, message: str, *, backup_id: str | None = None, file: str | None = None):
        super().__init__(message)
        self.backup_id = backup_id
        self.file = file


def _partition_hint(backup_id: str, partition_key: str | None = None) -> str:
    parsed = parse_backup_id(backup_id)
    if parsed:
        key = partition_key or parsed.partition_key
        return f"re-run the sender's {parsed.kind} partition {key} to publish it again"
    return "re-run the sender's partition of this backup to publish it again"


def altered_backup_error(manifest_or_id, file: str | None, what: str) -> VerifyError:
    """The VerifyError for a backup altered or truncated in transit (``what`` says how)."""
    if isinstance(manifest_or_id, Manifest):
        bid, hint = (
            manifest_or_id.backup_id,
            _partition_hint(manifest_or_id.backup_id, manifest_or_id.partition_key),
        )
    else:
        bid, hint = manifest_or_id, _partition_hint(manifest_or_id)
    where = f"backup {bid}: file {file}: " if file else f"backup {bid}: "
    return VerifyError(
        f"{where}{what}. The backup was altered or truncated in transit; {hint}", backup_id=bid, file=file
    )


def _is_special(path: Path) -> bool:
    """A FIFO, socket or device (lstat: never opened); missing files and links are judged on open."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode))


def _load_manifest(backup_dir: Path) -> Manifest:
    folder_id = backup_dir.name
    path = backup_dir / MANIFEST_NAME
    try:
        data = manifest_bytes(path)
    except FileNotFoundError:
        raise altered_backup_error(
            folder_id, MANIFEST_NAME, f"{MANIFEST_NAME} is missing from {backup_dir}"
        ) from None
    except ManifestError as exc:  # a link, not a regular file, over the size cap
        raise altered_backup_error(folder_id, MANIFEST_NAME, str(exc)) from None
    except OSError as exc:  # unreadable
        raise altered_backup_error(
            folder_id, MANIFEST_NAME, f"{MANIFEST_NAME} can't be opened ({exc.strerror})"
        ) from None
    try:
        manifest = Manifest.from_json(data)
    except ManifestError as exc:
        raise altered_backup_error(folder_id, MANIFEST_NAME, f"malformed manifest: {exc}") from None
    if manifest.backup_id != folder_id:
        raise altered_backup_error(
            folder_id,
            MANIFEST_NAME,
            f"the manifest's backup_id is {manifest.backup_id!r}, not the folder's name {folder_id!r}",
        )
    kind_folder = backup_dir.parent.name
    if kind_folder in KINDS and kind_folder != manifest.kind:
        raise altered_backup_error(
            folder_id, MANIFEST_NAME, f"a {manifest.kind} backup in the inbox's {kind_folder} folder"
        )
    return manifest


def _open_inside(backup_dir: Path, name: str):
    """Open ``name`` (relative, already checked safe by the manifest parser) without
    following a symlink anywhere below ``backup_dir``; return (fd, None) or (None, problem)."""
    parts = name.split("/")
    current = backup_dir
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None, "is missing (no folder " + str(current.relative_to(backup_dir)) + ")"
        if not stat.S_ISDIR(st.st_mode):
            return None, f"is not inside a regular folder ({current.relative_to(backup_dir)} is not a folder)"
    path = backup_dir / name
    if _is_special(path):
        return None, "is not a regular file (a FIFO, socket or device)"
    try:
        fd = os.open(path, SAFE_OPEN)
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        if os.path.islink(path):
            return None, "is a symlink, not a regular file"
        return None, f"can't be opened ({exc.strerror})"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None, "is not a regular file"
    return fd, None


VERIFY_WORKERS = 2  # files checked at once
FEED = 512  # compressed bytes per decompress call: zstd unpacks at most ~32768x, so <= 16 MB out per worker


class _LineCounter:
    """Decompress a zstd stream incrementally, frame after frame (as the reader does), and
    count its lines, within the file's bounds (limits.py): the first excess of rows, bytes
    unpacked or line length stops it, and memory stays bounded whatever the file unpacks to."""

    def __init__(self, entry: FileEntry, limits: PayloadLimits):
        self._dctx = zstandard.ZstdDecompressor()
        self._dobj = None  # the frame being decoded; None between frames
        self.lines = 0
        self.unpacked = 0
        self.line_run = 0  # bytes since the last newline
        self.last_byte = b""
        self.error: str | None = None
        self.bound: str | None = None  # the setting a bound error is about
        self._max_rows = min(entry.rows, limits.max_table_rows)
        self._max_bytes, self._bytes_rule = limits.unpacked_bound(entry.bytes)
        self._max_line = limits.max_line_bytes
        self._rows_rule = (
            f"the manifest says {entry.rows}"
            if entry.rows <= limits.max_table_rows
            else f"{MAX_TABLE_ROWS.name}={limits.max_table_rows}"
        )

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        for at in range(0, len(view), FEED):
            if self.error:
                return
            self._feed(view[at : at + FEED])

    def _feed(self, data) -> None:
        while data and not self.error:
            if self._dobj is None:
                self._dobj = self._dctx.decompressobj()
            try:
                out = self._dobj.decompress(data)
            except zstandard.ZstdError as exc:
                self.error = f"is not a valid zstd stream ({exc})"
                return
            if out:
                self._count(out)
            if not self._dobj.eof:
                return
            data = self._dobj.unused_data  # the next frame starts here
            self._dobj = None

    def _count(self, out: bytes) -> None:
        self.unpacked += len(out)
        self.lines += out.count(b"\n")
        first, last = out.find(b"\n"), out.rfind(b"\n")
        longest = self.line_run + (len(out) if first < 0 else first)
        if 0 <= first < last and len(out) > self._max_line:  # inner lines matter only past one bound
            longest = max(longest, max(map(len, out[first + 1 : last].split(b"\n"))))
        self.line_run = len(out) - last - 1 if first >= 0 else self.line_run + len(out)
        longest = max(longest, self.line_run)
        self.last_byte = out[-1:]
        if self.lines > self._max_rows:
            self.error = f"holds more than {self._max_rows} rows ({self._rows_rule})"
            self.bound = self._rows_rule.split("=")[0] if "=" in self._rows_rule else None
        elif self.unpacked > self._max_bytes:
            self.error = f"unpacks to more than {self._max_bytes} bytes ({self._bytes_rule})"
            self.bound = self._bytes_rule.split("=")[0]
        elif longest > self._max_line:
            self.error = f"holds a row longer than {self._max_line} bytes ({MAX_ROW_MB.name})"
            self.bound = MAX_ROW_MB.name
        if self.error:
            self.error += "; refused at the first excess, nothing of it was loaded"

    def finish(self) -> tuple[int | None, str | None]:
        if self.error:
            return None, self.error
        if self._dobj is not None:
            return None, "ends in the middle of a zstd frame (truncated or corrupt)"
        # The reader yields an unterminated last line too: count it as a row.
        return self.lines + (1 if self.last_byte not in (b"", b"\n") else 0), None


class _SegmentChecker:
    """A segmented file's frames, each checked on its own as its bytes go by: its sha256, that
    it is whole zstd frames ending where its segment ends, and its row count (within the
    bounds, as _LineCounter does for a whole file). Same interface as _LineCounter."""

    def __init__(self, entry: FileEntry, limits: PayloadLimits):
        self._entry, self._limits = entry, limits
        self._segments = list(entry.segments)
        self._frame_sha256: list[str] = []
        self._at = 0  # bytes of the file fed so far
        self.lines = 0
        self.error: str | None = None
        self.bound: str | None = None
        self._start()

    def _start(self) -> None:
        seg = self._segments[0]
        self._counter = _LineCounter(replace(self._entry, rows=seg.rows, bytes=seg.bytes), self._limits)
        self._sha = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        """Hash every frame whole (the file's sha256 is theirs); stop unpacking at the first error."""
        while data and self._segments:
            seg = self._segments[0]
            piece, data = data[: seg.offset + seg.bytes - self._at], data[seg.offset + seg.bytes - self._at :]
            self._at += len(piece)
            self._sha.update(piece)
            if not self.error:
                self._counter.feed(piece)
            if self._at == seg.offset + seg.bytes:
                self._end(seg)

    def _end(self, seg) -> None:
        if not self.error:
            rows, problem = self._counter.finish()
            where = f"its segment of keys {seg.key_low} to {seg.key_high}"
            if problem:
                self.error, self.bound = f"{where} {problem}", self._counter.bound
            elif rows != seg.rows:
                self.error = f"{where} holds {rows} lines, the manifest says {seg.rows}"
            elif self._sha.hexdigest() != seg.sha256:
                self.error = f"{where} has sha256 {self._sha.hexdigest()}, the manifest says {seg.sha256}"
            self.lines += rows or 0
        self._frame_sha256.append(self._sha.hexdigest())
        self._segments.pop(0)
        if self._segments:
            self._start()

    def finish(self) -> tuple[int | None, str | None]:
        return (None, self.error) if self.error else (self.lines, None)

    def file_sha256(self) -> str:
        """The file's sha256 as a segmented file's is taken: of its frames' (frames_sha256)."""
        return frames_sha256(self._frame_sha256) if not self._segments else ""


def _beyond_bound_error(manifest: Manifest, file: str, what: str, setting: str) -> VerifyError:
    """A table file past one of the receiver's bounds: hostile or broken, or a table grown
    beyond what the receiver was set for (then the setting is the fix)."""
    return VerifyError(
        f"backup {manifest.backup_id}: file {file}: {what}. A sender bug or a hostile sender; if the "
        f"table really is that large, raise {setting} on the receiver and `arb requeue "
        f"{manifest.backup_id}`, otherwise {_partition_hint(manifest.backup_id, manifest.partition_key)}",
        backup_id=manifest.backup_id,
        file=file,
    )


def _check_file(backup_dir: Path, manifest: Manifest, entry: FileEntry, limits: PayloadLimits) -> None:
    if entry.kind in ROW_FILE_KINDS and entry.rows > limits.max_table_rows:
        raise _beyond_bound_error(
            manifest,
            entry.name,
            f"the manifest says {entry.rows} rows, more than {MAX_TABLE_ROWS.name}={limits.max_table_rows}",
            MAX_TABLE_ROWS.name,
        )
    fd, problem = _open_inside(backup_dir, entry.name)
    if problem:
        raise altered_backup_error(manifest, entry.name, problem)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size != entry.bytes:
            raise altered_backup_error(
                manifest,
                entry.name,
                f"size differs: the manifest says {entry.bytes} bytes, the file has {size} bytes",
            )
        digest = None if entry.segments else hashlib.sha256()  # a segmented file's: its frames'
        counter = None
        if entry.kind in ROW_FILE_KINDS:
            counter = (_SegmentChecker if entry.segments else _LineCounter)(entry, limits)
        read = 0
        while chunk := fh.read(CHUNK):
            if digest is not None:
                digest.update(chunk)
            read += len(chunk)
            if counter:
                counter.feed(chunk)  # stops unpacking at a bound; the hash still covers the file
    if read != entry.bytes:  # changed while we read it
        raise altered_backup_error(
            manifest,
            entry.name,
            f"size differs: the manifest says {entry.bytes} bytes, {read} bytes were read",
        )
    actual = digest.hexdigest() if digest is not None else counter.file_sha256()
    if actual != entry.sha256:
        raise altered_backup_error(
            manifest, entry.name, f"sha256 differs: the manifest says {entry.sha256}, the file has {actual}"
        )
    if counter is not None:
        rows, problem = counter.finish()
        if problem and counter.bound:
            raise _beyond_bound_error(manifest, entry.name, problem, counter.bound)
        if problem:
            raise altered_backup_error(manifest, entry.name, problem)
        if rows != entry.rows:
            raise altered_backup_error(
                manifest,
                entry.name,
                f"rows differ: the manifest says {entry.rows} rows, the file holds {rows} lines",
            )


def _check_no_extra_files(backup_dir: Path, manifest: Manifest) -> None:
    listed = {MANIFEST_NAME} | {f.name for f in manifest.files}
    folders = {"/".join(n.split("/")[:i]) for n in listed for i in range(1, n.count("/") + 1)}
    extra = []
    for root, dirs, files in os.walk(backup_dir):  # never follows symlinked folders
        rel_root = Path(root).relative_to(backup_dir)
        for name in sorted(dirs + files):
            rel = (rel_root / name).as_posix()
            if is_temporary_name(name):
                continue
            full = Path(root) / name
            if name in dirs and not full.is_symlink() and rel in folders:
                continue
            if name in files and rel in listed:
                continue  # listed files are checked (type, size, hash) by _check_file
            extra.append(rel + ("/" if name in dirs and not full.is_symlink() else ""))
        dirs[:] = [d for d in dirs if (rel_root / d).as_posix() in folders]
    if extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise altered_backup_error(
            manifest, extra[0].rstrip("/"), f"unexpected file(s) not listed in the manifest: {shown}"
        )


def verify_files(backup_dir: Path, progress=None, limits: PayloadLimits | None = None) -> Manifest:
    """Check a published backup folder against its manifest; return the manifest.

    Raises VerifyError (``backup_at_fault``) naming the backup, the file and what differs.
    ``progress`` (an ``arb_pipeline.progress.Progress``) counts the files as they are checked;
    ``limits`` bound what table files unpack to (default: from the settings).
    """
    limits = limits or PayloadLimits.from_env()
    backup_dir = Path(backup_dir)
    if backup_dir.is_symlink() or not backup_dir.is_dir():
        raise altered_backup_error(backup_dir.name, None, f"{backup_dir} is not a folder")
    manifest = _load_manifest(backup_dir)
    twice = sorted(
        {
            t
            for kind in ROW_FILE_KINDS
            for tables in [[f.table for f in manifest.files if f.kind == kind]]
            for t in tables
            if tables.count(t) > 1
        }
    )
    if twice:
        raise altered_backup_error(
            manifest, MANIFEST_NAME, f"the manifest lists more than one file for table(s) {', '.join(twice)}"
        )
    files = (
        manifest.files
        if progress is None
        else progress.track(manifest.files, "verify", describe=lambda e: e.name)
    )
    # Files are checked two at a time, largest first (hashing and unpacking release the
    # GIL: a complete's verify takes half the time on two cores); the first bad file in
    # the manifest's order is the one reported.
    largest_first = sorted(manifest.files, key=lambda e: -e.bytes)
    with ThreadPoolExecutor(VERIFY_WORKERS) as pool:
        checks = {e.name: pool.submit(_check_file, backup_dir, manifest, e, limits) for e in largest_first}
        try:
            for entry in files:
                checks[entry.name].result()
        finally:
            for check in checks.values():
                check.cancel()
    _check_no_extra_files(backup_dir, manifest)
    return manifest


__all__ = ["VerifyError", "altered_backup_error", "verify_files"]
