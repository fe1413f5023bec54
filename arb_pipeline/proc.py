"""Is a process still running: the one answer the reaper, the local services and the demo share."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int, *, group: bool = False) -> bool:
    """True while process ``pid`` runs (with ``group``: while any process of group ``pid`` exists).

    A process of another user counts as running. A zombie (exited, not yet reaped by its
    parent) counts as gone; a group's members are not looked at one by one.
    """
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if group:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def command_line(pid: int) -> bytes | None:
    """The process's NUL-separated command line, or None when it can't be read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
