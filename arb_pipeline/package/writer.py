"""Build a backup in a local staging folder: compressed, hashed, counted as written.

Each file is hashed while it is written, so nothing is read twice; the manifest is
built from what was actually written.

Staged files are not fsynced: publishing copies each one and makes the copy durable
(transport/), within the run that wrote it, and the receiver checks every file against
the manifest's sha256; a staging folder is never read after a crash (the retried run
builds a new backup). pg_dump to a file doesn't wait for the disk either, and the
fsyncs were about a tenth of a complete's dump time.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from arb_pipeline.package.manifest import MANIFEST_NAME, FileEntry, Manifest, frames_sha256


class HashingWriter:
    """A binary sink that writes to a file, hashing and counting the bytes."""

    def __init__(self, fh: BinaryIO, whole: bool = True):
        """``whole``: hash the whole file (else only its parts, ``start_part``)."""
        self._fh = fh
        self.sha256 = hashlib.sha256() if whole else None
        self.bytes = 0
        self._part: tuple[int, "hashlib._Hash"] | None = None  # start and hash of the part being written

    def write(self, data) -> int:
        self._fh.write(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        if self._part is not None:
            self._part[1].update(data)
        self.bytes += len(data)
        return len(data)

    def start_part(self) -> None:
        """Hash what is written from here on as a part of its own too (``end_part``)."""
        self._part = (self.bytes, hashlib.sha256())

    def end_part(self) -> tuple[int, int, str]:
        """The part's offset in the file, size and sha256."""
        assert self._part is not None, "start_part first"
        start, digest = self._part
        self._part = None
        return start, self.bytes - start, digest.hexdigest()

    def flush(self) -> None:
        self._fh.flush()


class TableSink:
    """Where extraction writes one table's rows: line-oriented, compressed with zstd."""

    def __init__(self, compressed: HashingWriter, level: int, threads: int):
        self._compressed = compressed
        self._cctx = zstandard.ZstdCompressor(level=level, threads=threads)
        self._stream = self._cctx.stream_writer(compressed, closefd=False)
        self.rows = 0
        self.raw_bytes = 0

    def write_lines(self, data: bytes) -> None:
        """Write rows, one per line; a chunk may end inside a row if a later one ends it
        (rows are counted by newline)."""
        self.rows += data.count(b"\n")
        self.raw_bytes += len(data)
        self._stream.write(data)

    def close(self) -> None:
        self._stream.flush(zstandard.FLUSH_FRAME)
        self._stream.close()

    @property
    def file_bytes(self) -> int:
        """Size of the compressed file (after close)."""
        return self._compressed.bytes

    @property
    def file_sha256(self) -> str:
        return self._compressed.sha256.hexdigest()


class FramedTableSink(TableSink):
    """A table sink whose file is a sequence of zstd frames, each hashed on its own
    (segmented table files); nothing follows the last frame. The file's sha256 is its
    frames' (manifest.frames_sha256): each byte is hashed once, on the production server too."""

    def __init__(self, compressed: HashingWriter, level: int, threads: int):
        self._compressed = compressed
        self._cctx = zstandard.ZstdCompressor(level=level, threads=threads)
        self._frame = None
        self._frame_sha256: list[str] = []
        self.rows = 0
        self.raw_bytes = 0

    def start_frame(self) -> None:
        """What is written from here to ``end_frame`` is one frame."""
        self._compressed.start_part()
        self._frame = self._cctx.compressobj()

    def write_lines(self, data: bytes) -> None:
        self.rows += data.count(b"\n")
        self.raw_bytes += len(data)
        self._compressed.write(self._frame.compress(data))

    def end_frame(self) -> tuple[int, int, str]:
        """End the frame: its offset in the file, size and sha256. No state carries over
        from one frame to the next, so the same rows make the same bytes."""
        self._compressed.write(self._frame.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))
        self._frame = None
        offset, size, sha256 = self._compressed.end_part()
        self._frame_sha256.append(sha256)
        return offset, size, sha256

    def close(self) -> None:
        assert self._frame is None, "end_frame first"

    @property
    def file_sha256(self) -> str:
        return frames_sha256(self._frame_sha256)


class StagedBackup:
    """One backup's staging folder; files are added, then the manifest is written last."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: list[FileEntry] = []

    def path(self, name: str) -> Path:
        return self.root / name

    @contextmanager
    def binary_file(self, name: str) -> Iterator[HashingWriter]:
        """Write a file; yields a HashingWriter; records bytes and sha256 in ``last_file``."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            writer = HashingWriter(fh)
            yield writer
        self.last_file = (writer.bytes, writer.sha256.hexdigest())

    @contextmanager
    def table_file(
        self, name: str, *, level: int = 3, threads: int = 0, framed: bool = False
    ) -> Iterator[TableSink]:
        """Write one table's file; the sink carries rows, bytes and sha256 afterwards
        (``framed``: a FramedTableSink). Safe to use from several threads at once (one file each)."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            sink = (FramedTableSink if framed else TableSink)(
                HashingWriter(fh, whole=not framed), level, threads
            )
            yield sink
            sink.close()

    def add_entry(self, entry: FileEntry) -> FileEntry:
        self.entries.append(entry)
        return entry

    def write_manifest(self, manifest: Manifest) -> Path:
        path = self.path(MANIFEST_NAME)
        path.write_bytes(manifest.to_json())
        return path

    def published_order(self) -> list[str]:
        """Every file in publishing order: data first, the manifest last."""
        return [e.name for e in self.entries] + [MANIFEST_NAME]
