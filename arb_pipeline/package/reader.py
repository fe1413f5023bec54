"""Read the files of a backup (verification comes first: see verify.py)."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import Iterator, Sequence

import zstandard

from arb_pipeline.fsutil import line_chunks
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest, ManifestError, Segment
from arb_pipeline.settings import MAX_MANIFEST_BYTES

CHUNK = 1 << 20
# Not following a link, and not blocking: a FIFO planted in place of a file would block a plain open.
SAFE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


def manifest_bytes(path: Path, cap: int | None = None) -> bytes:
    """A manifest's bytes, read only from a regular file and only up to ``cap`` bytes
    (``ARB_MAX_MANIFEST_BYTES`` by default). FileNotFoundError when there is none;
    ManifestError saying what is there instead; OSError when it can't be opened."""
    cap = MAX_MANIFEST_BYTES.read() if cap is None else cap
    not_regular = ManifestError(f"{MANIFEST_NAME} is not a regular file; a backup holds regular files only")
    mode = os.lstat(path).st_mode  # a device or FIFO is refused without being opened
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise not_regular
    try:
        fd = os.open(path, SAFE_OPEN)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ManifestError(f"{MANIFEST_NAME} is a symbolic link; a backup holds regular files") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the lstat
            raise not_regular
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ManifestError(
            f"{MANIFEST_NAME} is more than {MAX_MANIFEST_BYTES.name}={cap} bytes, so it was not read: "
            "a genuine manifest is a few kB per table. If this one is genuine, raise "
            f"{MAX_MANIFEST_BYTES.name} and `arb requeue` it"
        )
    return data


def read_manifest(backup_dir: Path) -> Manifest:
    return Manifest.from_json(manifest_bytes(Path(backup_dir) / MANIFEST_NAME))


def iter_table_chunks(
    path: Path,
    chunk_size: int = CHUNK,
    max_line: int | None = None,
    segments: Sequence[Segment] | None = None,
) -> Iterator[bytes]:
    """Decompressed content of a table file (every frame, or only the frames of ``segments``),
    in chunks that end on a line boundary; a line longer than ``max_line`` raises
    fsutil.LineTooLongError (memory stays bounded)."""
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as fh:
        if segments is None:
            with dctx.stream_reader(fh, read_across_frames=True) as reader:
                yield from line_chunks(reader.read, chunk_size, max_line)
            return
        for seg in segments:  # verification checked each frame ends where its segment does
            fh.seek(seg.offset)
            with dctx.stream_reader(io.BytesIO(fh.read(seg.bytes)), read_across_frames=True) as reader:
                yield from line_chunks(reader.read, chunk_size, max_line)


def iter_table_lines(path: Path) -> Iterator[bytes]:
    for chunk in iter_table_chunks(path):
        yield from chunk.splitlines()
