"""Read the files of a backup (verification comes first: see verify.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import zstandard

from arb_pipeline.fsutil import line_chunks
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest

CHUNK = 1 << 20


def read_manifest(backup_dir: Path) -> Manifest:
    return Manifest.from_json((Path(backup_dir) / MANIFEST_NAME).read_bytes())


def iter_table_chunks(path: Path, chunk_size: int = CHUNK, max_line: int | None = None) -> Iterator[bytes]:
    """Decompressed content of a table file, in chunks that end on a line boundary; a line
    longer than ``max_line`` raises fsutil.LineTooLongError (memory stays bounded)."""
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as fh, dctx.stream_reader(fh) as reader:
        yield from line_chunks(reader.read, chunk_size, max_line)


def iter_table_lines(path: Path) -> Iterator[bytes]:
    for chunk in iter_table_chunks(path):
        yield from chunk.splitlines()
