"""Whether a manifest that parses is plausible, checked before anything of its backup is
written (promise 7). Parsing (package/manifest.py) checks each field alone; this checks
the fields against each other and against the receiver: its clock and its ledger.

A sender with a wrong clock, a bug or a stolen key can publish a manifest that parses:
a snapshot in 2100 would make every later genuine backup "superseded", a complete older
than the one loaded would roll the receiver back. Such a backup is at fault: quarantined
with the reason, never loaded, never in the ledger. Whether its partition is one the
receiver knows is the inbox sensor's question (receiver/partition_fit.py, Dagster's).
Plain Python, no Dagster.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from arb_pipeline.errors import ArbError
from arb_pipeline.package.backup_id import parse_backup_id
from arb_pipeline.package.manifest import Manifest
from arb_pipeline.settings import MAX_CLOCK_AHEAD_SECONDS
from arb_pipeline.settings.setting import PARTITION_FORMATS

KEY_FORMATS = {"partial": PARTITION_FORMATS[0], "complete": PARTITION_FORMATS[1]}
_REPUBLISH = "re-run the sender's {kind} partition {key} to publish it again"


class ImplausibleBackupError(ArbError):
    """The manifest parses but can't be true; the message names the field and the fix."""

    backup_at_fault = True


def key_start(kind: str, key: str) -> datetime | None:
    """The start (UTC) of the partition ``key`` of a ``kind`` backup, or None when ``key`` is
    not written exactly as the sender writes one (no spaces, no trailing newline)."""
    fmt = KEY_FORMATS[kind]
    try:
        start = datetime.strptime(key, fmt).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None
    return start if start.strftime(fmt) == key else None


def clock_ahead(
    when: datetime, now: datetime | None = None, max_ahead: int | None = None
) -> timedelta | None:
    """How far ``when`` is ahead of ``now`` when that is more than ARB_MAX_CLOCK_AHEAD_SECONDS."""
    now = now or datetime.now(timezone.utc)
    max_ahead = MAX_CLOCK_AHEAD_SECONDS.read() if max_ahead is None else max_ahead
    ahead = when - now
    return ahead if ahead > timedelta(seconds=max_ahead) else None


def ahead_reason(field: str, when: datetime, ahead: timedelta, now: datetime | None = None) -> str:
    """Why a time ``ahead`` of the receiver's clock (``clock_ahead``) is refused, and the fix."""
    now = now or datetime.now(timezone.utc)
    setting = MAX_CLOCK_AHEAD_SECONDS.name
    return (
        f"{field} {when.isoformat()} is {_span(ahead)} ahead of this receiver's clock "
        f"({now:%Y-%m-%dT%H:%M:%SZ}), more than {setting} allows: the sender's "
        "clock (its database server's) is wrong; correct it (NTP), delete this backup, and re-run the "
        "sender's partitions made meanwhile. If the receiver's clock is the one behind, correct it, then "
        "`arb requeue` this backup"
    )


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds:.0f} s"


def consistency_problem(manifest: Manifest) -> str | None:
    """What makes the manifest's id, partition key and window disagree, or None."""
    m = manifest
    republish = _REPUBLISH.format(kind=m.kind, key=m.partition_key)
    named = parse_backup_id(m.backup_id)
    if named is None or named.partition_key != m.partition_key:
        return (
            f"manifest.partition_key {m.partition_key!r} is not the partition its backup_id {m.backup_id} "
            "names: the sender that wrote it is broken; fix it, then re-run the sender's partition"
        )
    start = key_start(m.kind, m.partition_key)
    if start is None:
        return (
            f"manifest.partition_key {m.partition_key!r} is not a {m.kind} partition key "
            f"({KEY_FORMATS[m.kind]}, UTC): the sender that wrote it is broken"
        )
    if m.window_start != start or m.window_end <= m.window_start:
        return (
            f"manifest.window [{m.window_start.isoformat()}, {m.window_end.isoformat()}) is not the "
            f"window of partition {m.partition_key} (it starts at {start.isoformat()}): the sender that "
            f"wrote it is broken; {republish}"
        )
    if m.extract_from is not None and m.extract_from > m.window_start:
        return (
            f"manifest.window.extract_from {m.extract_from.isoformat()} is after the window's start "
            f"{m.window_start.isoformat()}: rows of the window would be missing; {republish}"
        )
    return None


def check_plausible(
    manifest: Manifest,
    *,
    newest_complete: tuple[str, datetime] | None = None,
    now: datetime | None = None,
    max_ahead: int | None = None,
) -> None:
    """Raise ImplausibleBackupError naming the field and the fix when the manifest can't be
    true: id, key and window disagree, its snapshot is ahead of the receiver's clock, or it
    is a complete older than ``newest_complete`` (backup id, snapshot time), the newest
    complete loaded (pass None for a backup already in the ledger: loading it again is a no-op)."""
    problem = consistency_problem(manifest)
    if problem:
        raise ImplausibleBackupError(f"backup {manifest.backup_id}: {problem}")
    ahead = clock_ahead(manifest.snapshot_time, now, max_ahead)
    if ahead is not None:
        reason = ahead_reason("manifest.snapshot_time", manifest.snapshot_time, ahead, now)
        raise ImplausibleBackupError(f"backup {manifest.backup_id}: {reason}")
    if manifest.kind == "complete" and newest_complete and manifest.snapshot_time < newest_complete[1]:
        raise ImplausibleBackupError(
            f"backup {manifest.backup_id}: manifest.snapshot_time {manifest.snapshot_time.isoformat()} is "
            f"before that of complete {newest_complete[0]} ({newest_complete[1].isoformat()}), already "
            "loaded: loading it would roll the receiver back. If the sender's database went back in time "
            "(a restore, a clock set back), an operator decides: delete this backup, or re-run the "
            "sender's complete once the sender is right"
        )
