"""Read the files of a backup (verification comes first: see verify.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import zstandard

from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest

CHUNK = 1 << 20


def read_manifest(backup_dir: Path) -> Manifest:
    return Manifest.from_json((Path(backup_dir) / MANIFEST_NAME).read_bytes())


def iter_table_chunks(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Decompressed content of a table file, in chunks that end on a line boundary."""
    dctx = zstandard.ZstdDecompressor()
    pending = b""
    with open(path, "rb") as fh, dctx.stream_reader(fh) as reader:
        while True:
            data = reader.read(chunk_size)
            if not data:
                break
            data = pending + data
            cut = data.rfind(b"\n") + 1
            pending = data[cut:]
            if cut:
                yield data[:cut]
    if pending:
        yield pending


def iter_table_lines(path: Path) -> Iterator[bytes]:
    for chunk in iter_table_chunks(path):
        yield from chunk.splitlines()
