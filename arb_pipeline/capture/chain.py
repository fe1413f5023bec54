"""The capture chain: which slot a captured partial was read from, so that the receiver never
applies partials across changes a lost or recreated slot dropped (issue 18, the wiring slice).
Plain Python.

Captured partials follow each other through the slot: each starts where the last one left
it (its ``to_lsn``), or earlier after a crash between publish and advance. A partial that
starts *past* the previous one's end comes from a recreated slot (dropped by hand, lost, or
advanced by hand): the changes in between are gone. The sender stamps each partial with its
slot's *epoch*, the ``from_lsn`` of the first partial read from that slot, kept across
partials while the chain holds and restarted at a break.

A complete pinned to the slot (``capture_lsn`` P) holds every change committed before P, and
the partials of an epoch E hold every change from E on. So the receiver applies a partial of
epoch E only once it has loaded a complete pinned at or after E: together they hold
everything. Until then the partial waits in the inbox. Out-of-order partials of one epoch
are fine (versions by commit LSN); only the slot's own history decides, not arrival order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.slot import CaptureError, slot_status

CAPTURE = "capture"  # ARB_PARTIAL_SOURCE's value for captured partials
EPOCH = "capture_epoch"  # in a captured partial's manifest ``extra`` and its materialization
HEALS = "a complete taken after the slot was recreated heals it"


def require_slot(conn, slot: str) -> int:
    """The slot's confirmed position; a missing or lost slot is an error naming the fix."""
    status = slot_status(conn, slot)
    if not status.exists:
        raise CaptureError(
            f"ARB_PARTIAL_SOURCE is capture but the sender has no replication slot {slot}: run "
            "`arb capture setup` (it creates the publication and the slot), then take a complete"
        )
    if status.lost or status.confirmed_flush_lsn is None:
        raise CaptureError(
            f"replication slot {slot} is lost (the server removed WAL it still needed): run "
            "`arb capture setup` to recreate it, then take a complete; " + HEALS
        )
    return status.confirmed_flush_lsn


@dataclass(frozen=True)
class CapturedRange:
    """A published captured partial's place in the slot, as the sender recorded it."""

    from_lsn: str
    to_lsn: str
    epoch: str | None = None


def epoch_of(from_lsn: str, previous: CapturedRange | None) -> str:
    """The epoch of a partial starting at ``from_lsn`` after ``previous`` (the last one
    published): the same as the previous one's while the chain holds, else a new one."""
    if previous is not None and previous.epoch and parse_lsn(from_lsn) <= parse_lsn(previous.to_lsn):
        return previous.epoch
    return from_lsn


def stamp_epoch(built, epoch: str):
    """The built captured partial with its epoch in the manifest (rewritten before publishing)."""
    manifest = replace(built.manifest, extra={**built.manifest.extra, EPOCH: epoch})
    built.staged.write_manifest(manifest)
    built.manifest = manifest
    return built


def gap_reason(epoch, newest_pin: str | None, backup_id: str) -> str | None:
    """Why a captured partial of ``epoch`` can't be applied on a receiver whose newest pinned
    complete is at ``newest_pin`` (None: none loaded), or None when it can. A partial without
    an epoch (built outside the pipeline's assets) is not checked."""
    if epoch is None:
        return None
    try:
        start = parse_lsn(epoch)
    except (ValueError, TypeError, AttributeError):
        return f"captured partial {backup_id}: its {EPOCH} {epoch!r} is not an LSN; it waits in the inbox"
    if newest_pin is not None and start <= parse_lsn(newest_pin):
        return None
    held = (
        f"the newest pinned complete loaded is at {newest_pin}" if newest_pin else "no pinned complete loaded"
    )
    return (
        f"captured partial {backup_id} is read from a replication slot that started at LSN {epoch}, and "
        f"this receiver has nothing from before it ({held}): the changes committed before the slot "
        "started (or in the gap a dropped, lost or recreated slot left) are in no partial. It waits in "
        f"the inbox; {HEALS} (a complete pinned at or after {epoch}), then this and later partials apply"
    )


def resync_point(
    newest: CapturedRange | None, slot_position: int | None, newest_pin: str | None
) -> int | None:
    """The slot position a complete must be pinned at or after, when the newest pinned
    complete (``newest_pin``) is older; None when that complete exists. The position is the
    newest published partial's epoch, or the slot's own position when no partial was read
    from it yet (set up, or recreated: past the newest partial's end)."""
    point = slot_position
    if newest is not None and newest.epoch is not None:
        recreated = slot_position is not None and slot_position > parse_lsn(newest.to_lsn)
        point = slot_position if recreated else parse_lsn(newest.epoch)
    if point is None or (newest_pin is not None and parse_lsn(newest_pin) >= point):
        return None
    return point
