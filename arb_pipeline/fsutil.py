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


class LineTooLongError(ValueError):
    """A line grew past ``max_line`` bytes before its newline came."""


def line_chunks(
    read: Callable[[int], bytes], chunk_size: int = 1 << 20, max_line: int | None = None
) -> Iterator[bytes]:
    """Chunks of a byte stream cut on line boundaries (one row per line); a last piece
    without a newline comes out on its own, for the caller to judge.

    Linear in time and memory: each byte read is searched once and joined once (a long line
    is collected as a list of pieces, not re-concatenated per read), and with ``max_line``
    a line longer than that raises LineTooLongError as soon as it passes the bound.
    """
    pieces: list[bytes] = []  # the current unterminated line, as read
    pending = 0  # bytes in pieces
    while True:
        data = read(chunk_size)
        if not data:
            break
        cut = data.rfind(b"\n") + 1
        if not cut:
            pieces.append(data)
            pending += len(data)
            if max_line is not None and pending > max_line:
                raise LineTooLongError(f"a line is longer than {max_line} bytes")
            continue
        if max_line is not None and (
            pending + data.find(b"\n") > max_line
            or (max_line < cut and max(map(len, data[:cut].split(b"\n"))) > max_line)
        ):  # the second test only runs for bounds below one read, as in tests
            raise LineTooLongError(f"a line is longer than {max_line} bytes")
        if pieces:
            pieces.append(data[:cut])
            yield b"".join(pieces)
        else:
            yield data[:cut] if cut < len(data) else data
        pieces = [data[cut:]] if cut < len(data) else []
        pending = len(data) - cut
    if pieces:
        yield b"".join(pieces)
