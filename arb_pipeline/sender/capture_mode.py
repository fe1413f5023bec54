"""The partial asset in capture mode (ARB_PARTIAL_SOURCE=capture): what it passes to
build_captured_partial and what it records, in Dagster terms.

The slot moves only after the package's manifest is published: the asset advances it after
the IO manager has published the ``backup`` output (``after_publish``). Killed in between,
the slot stays and the next run publishes the same changes again. Each materialization keeps
the window's ``from_lsn`` and ``to_lsn``; re-materializing a window passes its ``from_lsn``
back (``expect_from_lsn``), so a window the slot has moved past is refused, not rebuilt
with other changes. Each partial carries its slot's epoch (capture/chain.py) so the receiver
waits, after a recreated slot, for a complete taken since.
"""

from __future__ import annotations

import dagster as dg

from arb_pipeline.capture.chain import EPOCH, CapturedRange, epoch_of, require_slot, stamp_epoch
from arb_pipeline.capture.pgoutput import format_lsn
from arb_pipeline.extract.captured import CaptureSource, advance_past, build_captured_partial
from arb_pipeline.package.manifest import Manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.sender.resources import SenderDatabase, SenderSettings

PARTIAL_BACKUP = dg.AssetKey(["sender", "partial", "backup"])
COMPLETE_BACKUP = dg.AssetKey(["sender", "complete", "backup"])


def capture_metadata(manifest: Manifest) -> dict:
    """The materialization metadata of a captured partial's place in the slot (none for other
    backups); a pinned complete's capture_lsn."""
    if manifest.capture is not None:
        c = manifest.capture
        changes: dict[str, dict] = {}  # every captured table, those without an asset too (telemetry)
        for f in manifest.table_files():
            changes.setdefault(f.table, {})["rows"] = f.rows
        for f in manifest.delete_files():
            changes.setdefault(f.table, {})["deleted_keys"] = f.rows
        return {
            "source": "capture",
            "slot": c.slot,
            "from_lsn": c.from_lsn,
            "to_lsn": c.to_lsn,
            EPOCH: manifest.extra.get(EPOCH, ""),
            "transactions": c.transactions,
            "changes": dg.MetadataValue.json(changes),
        }
    if manifest.capture_lsn is not None:
        return {"capture_lsn": manifest.capture_lsn}
    return {}


def capture_build(context: dg.AssetExecutionContext, sender_db: SenderDatabase, settings: SenderSettings):
    """(build, its arguments) for this run: build_captured_partial stamped with the slot's
    epoch (capture/chain.py), and the slot advance after the publish."""
    dsn = sender_db.checked_dsn()
    with connect(dsn, autocommit=True) as conn:
        position = require_slot(conn, settings.capture_slot)
    expect = _text(_latest(context.instance, PARTIAL_BACKUP, context.partition_key), "from_lsn")
    previous = newest_captured_range(context.instance)
    context.log.info(
        f"capture: slot {settings.capture_slot} at {format_lsn(position)}"
        + (f"; this window was built before from {expect}" if expect else "")
    )

    def build(**kwargs):
        built = build_captured_partial(**kwargs)
        epoch = epoch_of(built.manifest.capture.from_lsn, previous)
        if previous is not None and epoch != previous.epoch:
            context.log.warning(
                f"capture: slot {settings.capture_slot} starts at {epoch}, past the previous partial's "
                f"end {previous.to_lsn}: it was recreated; the receiver waits for a complete taken now"
            )
        return stamp_epoch(built, epoch)

    def advance(built) -> None:
        moved = advance_past(built, dsn)
        context.log.info(f"capture: slot {settings.capture_slot} advanced to {format_lsn(moved)}")

    return build, {
        "dsn": dsn,
        "source": CaptureSource(settings.capture_slot, settings.capture_publication),
        "expect_from_lsn": expect,
        "after_publish": advance,
    }


def _latest(instance, key: dg.AssetKey, partition: str | None = None):
    partitions = [partition] if partition else None
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1
    ).records
    return found[0].asset_materialization if found else None


def _text(materialization, name: str) -> str | None:
    if materialization is None or name not in materialization.metadata:
        return None
    return str(materialization.metadata[name].value)


def newest_captured_range(instance) -> CapturedRange | None:
    """The newest captured partial the sender published (in run order), or None."""
    for record in instance.fetch_materializations(PARTIAL_BACKUP, limit=20).records:
        m = record.asset_materialization
        if m is not None and "from_lsn" in m.metadata:
            return CapturedRange(_text(m, "from_lsn"), _text(m, "to_lsn"), _text(m, EPOCH) or None)
    return None


def newest_complete_pin(instance) -> str | None:
    """The capture_lsn of the newest complete the sender published (None: not pinned)."""
    return _text(_latest(instance, COMPLETE_BACKUP), "capture_lsn")
