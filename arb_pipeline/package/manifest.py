"""The manifest: what a backup holds, with sizes, sha256 and row counts to verify it by.

Parsing is strict: anything unexpected is a ManifestError naming the field, so a
malformed or hostile manifest never reaches the loader.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from arb_pipeline.package.backup_id import KINDS, parse_backup_id
from arb_pipeline.package.manifest_fields import FieldReader, ManifestError

FORMAT = "arb-backup"
FORMAT_VERSION = 1
# A captured partial is version 2: a receiver that predates capture must refuse it, not load
# its upserts as a timestamp partial and skip its deletes. Everything else stays version 1.
CAPTURE_FORMAT_VERSION = 2
# A complete with segmented table files is version 3: an older receiver reads only a file's
# first zstd frame, so it must refuse the backup rather than count too few rows.
SEGMENTED_FORMAT_VERSION = 3
MANIFEST_NAME = "manifest.json"
# "deletes": a captured partial's deleted keys of one table (primary key + arb_commit_lsn)
FILE_KINDS = ("table", "media", "schema", "restore", "deletes")
ROW_FILE_KINDS = ("table", "deletes")  # files of rows, one per line, of one table
COMMIT_LSN_COLUMN = "arb_commit_lsn"  # the last column of a captured partial's files: the row's commit LSN
SOURCES = ("timestamp", "capture")  # how a partial chose its rows: by cursor window, or from the slot
TABLE_FORMATS = ("jsonl", "copy-text")


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str


@dataclass(frozen=True)
class TableFingerprint:
    """Row count and order-independent digest of a table file's columns, computed by the
    sender's server in the backup's snapshot (rowhash.table_fingerprint), so the receiver
    can check its own copy without a connection to the sender."""

    algorithm: str  # rowhash.ROW_HASH_ALGORITHM
    rows: int
    digest: str  # 16 hex digits


@dataclass(frozen=True)
class Segment:
    """One zstd frame of a segmented table file: the rows whose key lies in
    ``[key_low, key_high]`` (a power-of-two wide, aligned range), in key order, at ``offset``
    in the compressed file. An unchanged range compresses to the same bytes, so the same
    sha256 tells the receiver it has staged these rows before (load/segments.py)."""

    key_low: int
    key_high: int
    offset: int
    bytes: int
    rows: int
    sha256: str


def frames_sha256(frame_sha256s) -> str:
    """A segmented file's ``sha256``: of its frames' sha256 hex digests, each on a line of its
    own (``sha256sum`` of each frame, then of those lines), so each byte is hashed once."""
    return hashlib.sha256("".join(f"{d}\n" for d in frame_sha256s).encode()).hexdigest()


@dataclass(frozen=True)
class FileEntry:
    name: str  # relative to the backup folder, e.g. "tables/X.jsonl.zst"
    kind: str  # table | media | schema | restore
    bytes: int
    sha256: str
    rows: int | None = None  # table rows, or media files in the bundle
    table: str | None = None
    format: str | None = None  # table files: jsonl | copy-text
    columns: tuple[ColumnSpec, ...] = ()
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    fingerprint: TableFingerprint | None = None  # complete backups' tables, over ``columns``
    # A complete's large tables: one frame per key range; ``sha256`` is then frames_sha256's.
    segments: tuple[Segment, ...] = ()

    @property
    def segment_bits(self) -> int | None:
        """log2 of the segments' width (all segments of a file are as wide), or None."""
        if not self.segments:
            return None
        return (self.segments[0].key_high - self.segments[0].key_low + 1).bit_length() - 1


@dataclass(frozen=True)
class MediaEntry:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class MissingMedia:
    name: str
    reason: str


@dataclass(frozen=True)
class CaptureRange:
    """What a captured partial holds: the slot's transactions from ``from_lsn`` up to
    ``to_lsn`` (where the slot goes once it is published); LSNs as pg_lsn text."""

    slot: str
    from_lsn: str
    to_lsn: str
    transactions: int
    first_commit: str | None  # commit LSN of its first and last transaction (None: no transaction)
    last_commit: str | None


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    kind: str
    partition_key: str
    window_start: datetime
    window_end: datetime
    extract_from: datetime | None  # partial: window start minus the overlap; complete: None
    snapshot_time: datetime  # on the sender's database clock
    sender_id: str
    created_by: str
    files: tuple[FileEntry, ...]
    tables_order: tuple[str, ...]  # parents first
    media: tuple[MediaEntry, ...] = ()
    media_missing: tuple[MissingMedia, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "timestamp"
    capture: CaptureRange | None = None  # a captured partial's slot range
    capture_lsn: str | None = None  # a complete's: the slot position its snapshot was taken at

    def table_files(self) -> list[FileEntry]:
        by_table = {f.table: f for f in self.files if f.kind == "table"}
        return [by_table[t] for t in self.tables_order if t in by_table]

    def delete_files(self) -> list[FileEntry]:
        """A captured partial's delete files, children first (the reverse of tables_order)."""
        by_table = {f.table: f for f in self.files if f.kind == "deletes"}
        return [by_table[t] for t in reversed(self.tables_order) if t in by_table]

    def file(self, kind: str) -> FileEntry | None:
        return next((f for f in self.files if f.kind == kind), None)

    @property
    def format_version(self) -> int:
        if self.source == "capture":
            return CAPTURE_FORMAT_VERSION
        return SEGMENTED_FORMAT_VERSION if any(f.segments for f in self.files) else FORMAT_VERSION

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        doc = {
            "format": FORMAT,
            "format_version": self.format_version,
            "backup_id": self.backup_id,
            "kind": self.kind,
            "partition_key": self.partition_key,
            "window": {
                "start": self.window_start.isoformat(),
                "end": self.window_end.isoformat(),
                "extract_from": self.extract_from.isoformat() if self.extract_from else None,
            },
            "snapshot_time": self.snapshot_time.isoformat(),
            "sender_id": self.sender_id,
            "created_by": self.created_by,
            "tables_order": list(self.tables_order),
            "files": [_file_to_dict(f) for f in self.files],
            "media": {
                "files": [asdict(m) for m in self.media],
                "missing": [asdict(m) for m in self.media_missing],
            },
            "extra": self.extra,
        }
        if self.source != "timestamp":  # old manifests stay byte for byte as they were
            doc["source"] = self.source
        if self.capture is not None:
            doc["capture"] = asdict(self.capture)
        if self.capture_lsn is not None:
            doc["capture_lsn"] = self.capture_lsn
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        except RecursionError:
            raise ManifestError("manifest is nested too deeply to be a manifest") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: Any) -> "Manifest":
        r = FieldReader(doc, "manifest")
        if r.str("format") != FORMAT:
            raise ManifestError(f"manifest.format is not {FORMAT!r}: this is not an arb_pipeline backup")
        version = r.int("format_version")
        if version not in (FORMAT_VERSION, CAPTURE_FORMAT_VERSION, SEGMENTED_FORMAT_VERSION):
            raise ManifestError(
                f"manifest.format_version {version} is not supported (this receiver reads "
                f"{FORMAT_VERSION} to {SEGMENTED_FORMAT_VERSION}); upgrade arb_pipeline on the receiver"
            )
        kind = r.choice("kind", KINDS)
        source = r.choice("source", SOURCES, optional=True) or "timestamp"
        capture = _capture_from(r.sub("capture", optional=True))
        capture_lsn = r.lsn("capture_lsn", optional=True)
        if (version == CAPTURE_FORMAT_VERSION) != (source == "capture"):
            raise ManifestError(
                f"manifest.format_version {version} does not fit source {source!r}: captured "
                f"partials are version {CAPTURE_FORMAT_VERSION}, other backups {FORMAT_VERSION}"
            )
        if source == "capture" and (kind != "partial" or capture is None or capture_lsn is not None):
            raise ManifestError("manifest.source 'capture' is for partials, with capture and no capture_lsn")
        if source != "capture" and capture is not None:
            raise ManifestError("manifest.capture is only for captured partials (source 'capture')")
        if capture_lsn is not None and kind != "complete":
            raise ManifestError("manifest.capture_lsn is only for completes")
        backup_id = r.str("backup_id")
        parsed = parse_backup_id(backup_id)
        if parsed is None or parsed.kind != kind:
            raise ManifestError(
                f"manifest.backup_id {backup_id!r} is not of the form <kind>-<partition key>-<id>"
            )
        window = r.sub("window")
        media = r.sub("media")
        files = tuple(_file_from(sub) for sub in r.list_of_subs("files"))
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ManifestError("manifest.files lists a file twice")
        tables_order = tuple(r.str_list("tables_order"))
        if source != "capture" and any(f.kind == "deletes" for f in files):
            raise ManifestError("manifest.files: only captured partials carry delete files")
        segmented = any(f.segments for f in files)
        if (version == SEGMENTED_FORMAT_VERSION) != segmented or (segmented and kind != "complete"):
            raise ManifestError(
                f"manifest.format_version {version} does not fit its files: completes with segmented "
                f"table files are version {SEGMENTED_FORMAT_VERSION}, and only completes have them"
            )
        table_files = {f.table for f in files if f.kind in ROW_FILE_KINDS}
        if table_files - set(tables_order):
            raise ManifestError(
                f"manifest.tables_order lacks table(s) {sorted(table_files - set(tables_order))}"
            )
        return cls(
            backup_id=backup_id,
            kind=kind,
            partition_key=r.str("partition_key"),
            window_start=window.time("start"),
            window_end=window.time("end"),
            extract_from=window.time("extract_from", optional=True),
            snapshot_time=r.time("snapshot_time"),
            sender_id=r.str("sender_id"),
            created_by=r.str("created_by"),
            files=files,
            tables_order=tables_order,
            media=tuple(
                MediaEntry(s.safe_name("name"), s.nonneg("bytes"), s.sha256("sha256"))
                for s in media.list_of_subs("files")
            ),
            media_missing=tuple(
                MissingMedia(s.str("name"), s.str("reason")) for s in media.list_of_subs("missing")
            ),
            extra=r.dict("extra", optional=True) or {},
            source=source,
            capture=capture,
            capture_lsn=capture_lsn,
        )


def _capture_from(r: FieldReader | None) -> CaptureRange | None:
    if r is None:
        return None
    return CaptureRange(
        slot=r.str("slot"),
        from_lsn=r.lsn("from_lsn"),
        to_lsn=r.lsn("to_lsn"),
        transactions=r.nonneg("transactions"),
        first_commit=r.lsn("first_commit", optional=True),
        last_commit=r.lsn("last_commit", optional=True),
    )


def _file_to_dict(f: FileEntry) -> dict[str, Any]:
    d = asdict(f)
    d["columns"] = [asdict(c) for c in f.columns]
    d["primary_key"] = list(f.primary_key)
    d["segments"] = [asdict(x) for x in f.segments]
    return {k: v for k, v in d.items() if v not in (None, [], ())}


def _file_from(r: FieldReader) -> FileEntry:
    kind = r.choice("kind", FILE_KINDS)
    entry = FileEntry(
        name=r.safe_name("name"),
        kind=kind,
        bytes=r.nonneg("bytes"),
        sha256=r.sha256("sha256"),
        rows=r.nonneg("rows", optional=True),
        table=r.str("table", optional=True),
        format=r.choice("format", TABLE_FORMATS, optional=True),
        columns=tuple(
            ColumnSpec(c.str("name"), c.str("type")) for c in r.list_of_subs("columns", optional=True)
        ),
        primary_key=tuple(r.str_list("primary_key", optional=True)),
        cursor=r.str("cursor", optional=True),
        fingerprint=_fingerprint_from(r.sub("fingerprint", optional=True)),
        segments=tuple(_segment_from(x) for x in r.list_of_subs("segments", optional=True)),
    )
    if entry.fingerprint is not None and (kind != "table" or entry.fingerprint.rows != entry.rows):
        raise ManifestError(f"{r.path}.fingerprint: only table files carry one, with the file's row count")
    if kind in ROW_FILE_KINDS and (
        entry.table is None
        or entry.format is None
        or entry.rows is None
        or not entry.columns
        or not entry.primary_key
    ):
        raise ManifestError(f"{r.path}: a {kind} file needs table, format, rows, columns and primary_key")
    if entry.segments:
        _check_segments(r.path, entry)
    return entry


def _segment_from(r: FieldReader) -> Segment:
    return Segment(
        key_low=r.key("key_low"),
        key_high=r.key("key_high"),
        offset=r.nonneg("offset"),
        bytes=r.nonneg("bytes"),
        rows=r.nonneg("rows"),
        sha256=r.sha256("sha256"),
    )


def _check_segments(path: str, entry: FileEntry) -> None:
    """Segments tile the file in order (offsets and rows add up), over ascending key ranges
    of one power-of-two width, each aligned to it, of a one-column key."""
    problem = None
    if entry.kind != "table" or entry.format != "copy-text" or len(entry.primary_key) != 1:
        problem = "only copy-text table files with a one-column primary key are segmented"
    width = entry.segments[0].key_high - entry.segments[0].key_low + 1
    offset, last_high = 0, None
    for seg in entry.segments:
        if problem:
            break
        if seg.key_high - seg.key_low + 1 != width or width <= 0 or width & (width - 1):
            problem = "segments must all be as wide, a power of two keys"
        elif seg.key_low % width or (last_high is not None and seg.key_low <= last_high):
            problem = "segments must be aligned to their width and in ascending key order"
        elif seg.offset != offset or seg.bytes == 0:
            problem = "segments must tile the file: each starts where the one before ended"
        offset, last_high = seg.offset + seg.bytes, seg.key_high
    if not problem and offset != entry.bytes:
        problem = f"segments cover {offset} bytes of the file's {entry.bytes}"
    if not problem and sum(seg.rows for seg in entry.segments) != entry.rows:
        problem = "segments' rows don't add up to the file's"
    if problem:
        raise ManifestError(f"{path}.segments: {problem}")


def _fingerprint_from(r: FieldReader | None) -> TableFingerprint | None:
    if r is None:
        return None
    digest = r.str("digest")
    if not re.fullmatch(r"[0-9a-f]{16}", digest):
        raise ManifestError(f"{r.path}.digest is not 16 hex digits")
    return TableFingerprint(algorithm=r.str("algorithm"), rows=r.nonneg("rows"), digest=digest)
