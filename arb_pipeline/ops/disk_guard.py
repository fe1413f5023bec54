"""The disk guard: stop loading when a volume the receiver writes to is nearly full.

``check_free_space`` raises a clear DiskSpaceError when a volume it is given has less free
space than ``ARB_MIN_FREE_MB``, rather than a load failing half way; nothing is lost, the
backups wait in the inbox. A :class:`DiskFloor` is that check carried through one load:
the receiver checks the inbox, the media folder and (when the server is on this machine and
lets the role see it) the database's data folder before it verifies a backup, again before
each media file with that file's size, and again while tables are staged and merged, so a
backup larger than the room left stops at the floor instead of filling the disk.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from arb_pipeline.errors import ArbError
from arb_pipeline.settings import MIN_FREE_MB

MIN_FREE_SETTING = MIN_FREE_MB.name
DATABASE_VOLUME = "database data folder"
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")
log = logging.getLogger(__name__)


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


def check_free_space(
    paths: dict[str, Path | str],
    min_free_bytes: int,
    adding: dict[str, int] | None = None,
    measure: Callable[[Path | str], int] = free_bytes,
) -> None:
    """Raise DiskSpaceError naming every volume below ``min_free_bytes`` free (0 disables),
    counting ``adding[label]`` bytes about to be written there as already gone."""
    if min_free_bytes <= 0:
        return
    low = []
    for label, path in paths.items():
        free = measure(path)
        need = (adding or {}).get(label, 0)
        if free - need < min_free_bytes:
            what = f", {format_bytes(need)} of it needed now" if need else ""
            low.append(f"{label} ({path}) has {format_bytes(free)} free{what}")
    if low:
        floor_mb = -(-min_free_bytes // (1024 * 1024))
        raise DiskSpaceError(
            f"not enough disk space: {'; '.join(low)}, below the floor of {format_bytes(min_free_bytes)} "
            f"({MIN_FREE_SETTING}={floor_mb}). Free space on that volume or raise the floor "
            f"({MIN_FREE_SETTING}); loading stopped, nothing was lost: backups wait in the inbox."
        )


@dataclass(frozen=True)
class DiskFloor:
    """The volumes one load writes to, and the free space each must keep while it does."""

    volumes: dict[str, Path]
    min_free_bytes: int
    measure: Callable[[Path | str], int] = field(default=free_bytes, compare=False)

    def check(self, adding: dict[str, int] | None = None) -> None:
        check_free_space(self.volumes, self.min_free_bytes, adding, self.measure)

    def with_database(self, conn) -> "DiskFloor":
        """This floor plus the database's data folder, when it can be watched from here."""
        if self.min_free_bytes <= 0:
            return self
        folder = database_folder(conn)
        if folder is None:
            return self
        return DiskFloor({**self.volumes, DATABASE_VOLUME: folder}, self.min_free_bytes, self.measure)


def database_folder(conn) -> Path | None:
    """The server's data folder when the server runs on this machine (a Unix socket or a
    loopback address) and the role may read ``data_directory`` (superuser or
    ``pg_read_all_settings``); None otherwise."""
    host = conn.info.host or ""
    if not (host.startswith("/") or host in LOCAL_HOSTS):
        return None
    usage, member = conn.execute(
        "SELECT pg_has_role(current_user, 'pg_read_all_settings', 'USAGE'), "
        "pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER')"
    ).fetchone()
    if not member:
        return None
    with conn.transaction():  # a NOINHERIT role (the receiver's) takes the right for one query
        if not usage:
            conn.execute("SET ROLE pg_read_all_settings")
        folder = Path(conn.execute("SELECT current_setting('data_directory')").fetchone()[0])
        if not usage:
            conn.execute("RESET ROLE")
    try:
        folder.stat()
    except OSError:
        log.info("disk guard: the database's data folder %s can't be seen from here; not watched", folder)
        return None
    return folder
