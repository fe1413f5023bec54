"""The disk guard: stop loading when a volume the receiver writes to is nearly full.

``check_free_space`` raises a clear DiskSpaceError when a volume it is given (the receiver
checks the inbox and the media folder, in ``receive.inbox.receive``, before it verifies a
backup) has less free space than ``ARB_MIN_FREE_MB``, rather than a load failing half way;
nothing is lost, the backups wait in the inbox.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from arb_pipeline.errors import ArbError
from arb_pipeline.settings import MIN_FREE_MB

MIN_FREE_SETTING = MIN_FREE_MB.name


class DiskSpaceError(ArbError):
    """A volume the receiver writes to is below the free-space floor."""


def free_bytes(path: Path | str) -> int:
    """Free bytes (for this unprivileged user) on the volume holding ``path``; a path that
    does not exist yet is measured at its nearest existing parent."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def format_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def check_free_space(paths: dict[str, Path | str], min_free_bytes: int) -> None:
    """Raise DiskSpaceError naming every volume below ``min_free_bytes`` free (0 disables)."""
    if min_free_bytes <= 0:
        return
    low = []
    for label, path in paths.items():
        free = free_bytes(path)
        if free < min_free_bytes:
            low.append(f"{label} ({path}) has {format_bytes(free)} free")
    if low:
        floor_mb = -(-min_free_bytes // (1024 * 1024))
        raise DiskSpaceError(
            f"not enough disk space: {'; '.join(low)}, below the floor of {format_bytes(min_free_bytes)} "
            f"({MIN_FREE_SETTING}={floor_mb}). Free space on that volume or raise the floor "
            f"({MIN_FREE_SETTING}); loading stopped, nothing was lost: backups wait in the inbox."
        )
