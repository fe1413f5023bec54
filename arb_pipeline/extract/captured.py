"""Captured partials: a window's committed changes, read from the replication slot, as a backup.

A captured partial holds every change of the transactions the slot yields for the window
(slot.read_window): per table with changes, an upsert file of whole rows and a delete file of
keys, each row followed by the commit LSN of the transaction that made it, so the receiver
versions rows by commit (load/captured.py). Its manifest says ``source: "capture"`` and where
in the slot it reads from and to.

Building never moves the slot: ``publish_and_advance`` publishes, then advances. A crash in
between leaves the slot where it was, so the next build reads the same transactions and
publishes the same changes; the receiver's loads of both are idempotent.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

from arb_pipeline import __version__
from arb_pipeline.capture.changes import ChangeSets, TableChanges
from arb_pipeline.capture.pgoutput import format_lsn, parse_lsn
from arb_pipeline.capture.slot import CaptureError, Transaction, advance, read_window
from arb_pipeline.catalog import Catalog, current_catalog, introspect, parents_first, shipped_columns
from arb_pipeline.extract.build import BuiltBackup, publish
from arb_pipeline.extract.media import bundle_media
from arb_pipeline.extract.tables import Window
from arb_pipeline.package.backup_id import build_backup_id
from arb_pipeline.package.manifest import COMMIT_LSN_COLUMN, CaptureRange, ColumnSpec, FileEntry, Manifest
from arb_pipeline.package.writer import StagedBackup
from arb_pipeline.pg.connect import connect

if TYPE_CHECKING:
    from arb_pipeline.transport.base import Transport

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_NEEDS_ESCAPE_BUT_TAB = re.compile(r"[\\\n\r]")
_LINES_PER_WRITE = 10_000  # rows rendered before they go to the compressor: bounded memory


def copy_text_field(value: str | None) -> str:
    """A value as COPY's text format writes it: pgoutput's text values are the types' output
    text already, so only COPY's own escapes are added; NULL is \\N."""
    if value is None:
        return "\\N"
    # most values (numbers, times, uuids) hold nothing to escape: searching is cheaper than translating
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def copy_text_line(values: tuple[str | None, ...], commit_lsn: str) -> str:
    """One row of a captured file: its values, then its commit LSN (nothing to escape)."""
    if None not in values:
        line = "\t".join(values)  # type: ignore[arg-type]
        # most rows hold nothing to escape: one search of the joined line, not one per value
        if line.count("\t") == len(values) - 1 and not _NEEDS_ESCAPE_BUT_TAB.search(line):
            return f"{line}\t{commit_lsn}"
    return "\t".join([*map(copy_text_field, values), commit_lsn])


def _as_tuple(picked, width: int) -> tuple:
    return picked if width > 1 else (picked,)  # itemgetter of one item gives the item itself


@dataclass(frozen=True)
class CaptureSource:
    """Where a captured partial reads: the sender's slot and the publication it decodes."""

    slot: str
    publication: str


def build_captured_partial(
    dsn: str,
    staging_root: Path,
    *,
    partition_key: str,
    window: Window,
    unique: str,
    media_dir: Path,
    sender_id: str,
    source: CaptureSource,
    expect_from_lsn: str | None = None,
    catalog: Catalog | None = None,
    include_personal: bool = False,
) -> BuiltBackup:
    """The window's captured changes and the media their upserted rows name, in a staging folder.

    ``expect_from_lsn`` (a re-materialization: the from_lsn of the window's earlier build):
    if the slot has moved past it, the window's changes were published and the slot no longer
    holds them, so the build refuses rather than publish a different, later set."""
    catalog = catalog or current_catalog()
    bid = build_backup_id("partial", partition_key, unique)
    staged = StagedBackup(Path(staging_root) / bid)
    with connect(dsn, autocommit=True) as conn, _cyclic_gc_paused():
        specs = {s.name: s for s in catalog.specs}
        infos = introspect(conn, list(specs))
        # Folded as each transaction is read: the window's rows are held once, as change sets.
        sets = ChangeSets({t: i.primary_key for t, i in infos.items()})
        commits: list[int] = []  # the first and last commit LSN, for the manifest
        captured = read_window(
            conn, source.slot, source.publication, window.end, consume=lambda txn: _fold(sets, commits, txn)
        )
        if expect_from_lsn is not None and captured.start_lsn != parse_lsn(expect_from_lsn):
            raise CaptureError(
                f"window {window.start.isoformat()} .. {window.end.isoformat()} was built from slot "
                f"{source.slot} at {expect_from_lsn}, but the slot is at {format_lsn(captured.start_lsn)} "
                "now: its changes were published and the slot has moved past them, so they can't be "
                "read again. The published backup stands; to rebuild the receiver, take a complete"
            )
        snapshot_time = conn.execute("SELECT now()").fetchone()[0]
    order = [t for t in parents_first(infos) if t in sets.tables]
    files, media = [], set()
    with _cyclic_gc_paused():
        for table in order:
            spec, info, changes = specs[table], infos[table], sets.tables[table]
            columns = shipped_columns(spec, info, include_personal)
            files += _write_table(
                staged, changes, info, [c.name for c in columns], {c.name: c.type for c in columns}
            )
            if spec.media_column:
                media.update(c.values.get(spec.media_column) or "" for c in changes.upserts)
    bundle = bundle_media(Path(media_dir), sorted(media), staged)
    manifest = Manifest(
        backup_id=bid,
        kind="partial",
        partition_key=partition_key,
        window_start=window.start,
        window_end=window.end,
        extract_from=window.start,  # no overlap: the slot yields each transaction once
        snapshot_time=snapshot_time,
        sender_id=sender_id,
        created_by=f"arb_pipeline {__version__}",
        files=tuple(staged.entries),
        tables_order=tuple(order),
        media=tuple(bundle.files),
        media_missing=tuple(bundle.missing),
        source="capture",
        capture=CaptureRange(
            slot=source.slot,
            from_lsn=format_lsn(captured.start_lsn),
            to_lsn=format_lsn(captured.advance_to),
            transactions=captured.transaction_count,
            first_commit=format_lsn(commits[0]) if commits else None,
            last_commit=format_lsn(commits[-1]) if commits else None,
        ),
    )
    staged.write_manifest(manifest)
    return BuiltBackup(staged, manifest)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Reading and writing a window allocate a few objects per row change, none in a cycle;
    the cyclic collector's passes over them took a quarter of extraction's CPU. Reference
    counting still frees them; the collector runs again after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fold(sets: ChangeSets, commits: list[int], txn: Transaction) -> None:
    sets.add(txn)
    if not commits:
        commits.append(txn.commit_lsn)
    commits[1:] = [txn.commit_lsn]


def _write_table(staged: StagedBackup, changes: TableChanges, info, columns: list[str], types: dict) -> list:
    """The table's upsert file (shipped columns + commit LSN) and delete file (key + commit LSN)."""
    missing = [c for c in columns if changes.upserts and c not in changes.columns]
    if missing:
        raise CaptureError(
            f"table {info.name}: the captured rows lack column(s) {', '.join(missing)} that the "
            "sender's table has now: its schema changed within the window; take a complete"
        )
    key_index = {c: i for i, c in enumerate(changes.key_columns)}
    lsn_texts: dict[int, str] = {}  # a window has few commits and many rows: each LSN written once
    out = []
    for kind, rows, cols in (
        ("table", changes.upserts, columns),
        ("deletes", changes.deletes, list(info.primary_key)),
    ):
        if not rows:
            continue
        suffix = "copy" if kind == "table" else "deleted.copy"
        name = f"tables/{info.name}.{suffix}.zst"
        if kind == "table":
            pick = itemgetter(*cols)
            fields = (_as_tuple(pick(c.values), len(cols)) for c in rows)
        else:
            pick = itemgetter(*(key_index[c] for c in cols))
            fields = (_as_tuple(pick(c.key), len(cols)) for c in rows)
        with staged.table_file(name, level=1) as sink:
            lines: list[str] = []
            for change, values in zip(rows, fields, strict=True):
                lsn = lsn_texts.get(change.commit_lsn)
                if lsn is None:
                    lsn = lsn_texts[change.commit_lsn] = format_lsn(change.commit_lsn)
                lines.append(copy_text_line(values, lsn))
                if len(lines) == _LINES_PER_WRITE:
                    sink.write_lines(("\n".join(lines) + "\n").encode())
                    lines.clear()
            if lines:
                sink.write_lines(("\n".join(lines) + "\n").encode())
        out.append(
            staged.add_entry(
                FileEntry(
                    name=name,
                    kind=kind,
                    bytes=sink.file_bytes,
                    sha256=sink.file_sha256,
                    rows=sink.rows,
                    table=info.name,
                    format="copy-text",
                    columns=tuple(ColumnSpec(c, types.get(c, "text")) for c in cols)
                    + (ColumnSpec(COMMIT_LSN_COLUMN, "pg_lsn"),),
                    primary_key=info.primary_key,
                )
            )
        )
    return out


def publish_and_advance(transport: Transport, built: BuiltBackup, dsn: str) -> int:
    """Publish a captured partial, then move its slot past what it holds; returns the slot's
    new position. Killed after the publish, the slot stays and the next build publishes the
    same changes again."""
    if built.manifest.capture is None:
        raise CaptureError(f"backup {built.manifest.backup_id} is not a captured partial")
    publish(transport, built)
    return advance_past(built, dsn)


def advance_past(built: BuiltBackup, dsn: str) -> int:
    """Move the slot to the captured partial's ``to_lsn``; call it only once its manifest is
    published (the Dagster asset does, after its IO manager published the package)."""
    capture = built.manifest.capture
    if capture is None:
        raise CaptureError(f"backup {built.manifest.backup_id} is not a captured partial")
    with connect(dsn, autocommit=True) as conn:
        return advance(conn, capture.slot, parse_lsn(capture.to_lsn))
