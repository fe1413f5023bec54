"""Small file-system helpers shared by the modules that move files into place."""

from __future__ import annotations

import os
from typing import Callable, Iterator


def fsync_dir(path) -> None:
    """Make a rename or a new entry in ``path`` durable (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def line_chunks(read: Callable[[int], bytes], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Chunks of a byte stream cut on line boundaries (one row per line); a last piece
    without a newline comes out on its own, for the caller to judge."""
    pending = b""
    while True:
        data = read(chunk_size)
        if not data:
            break
        data = pending + data
        cut = data.rfind(b"\n") + 1
        pending = data[cut:]
        if cut:
            yield data[:cut]
    if pending:
        yield pending
