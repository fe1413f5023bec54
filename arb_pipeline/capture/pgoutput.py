"""A decoder of ``pgoutput``, PostgreSQL's built-in logical replication output, protocol version 1.

Why pgoutput rather than wal2json: it ships inside every PostgreSQL since 10 (it is what
``CREATE SUBSCRIPTION`` uses), so managed services that offer logical decoding offer it, and
there is nothing to install on the production server; wal2json is a separate plugin (this
machine's Debian 12 has no wal2json package installed, a managed service may not allow it).
pgoutput also filters by publication on the server, so only the catalog's tables are decoded.
Its format is binary, which this module reads; values arrive in their text form.

We read it through the SQL function ``pg_logical_slot_peek_binary_changes(slot, upto_lsn,
upto_nchanges, 'proto_version', '1', 'publication_names', pub)``: one row per message, the
message in its ``data`` column. Layouts follow the PostgreSQL 15 documentation, "Logical
Replication Message Formats" (protocol section 55.9). All integers are big-endian; a String
is NUL-terminated; LSNs are Int64; timestamps are Int64 microseconds since 2000-01-01 UTC.
In protocol 1 no message carries the streaming Xid field (that is protocol 2 and later).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from arb_pipeline.errors import ArbError

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

# TupleData column kinds: a NULL, an unchanged TOASTed value (not sent: the row's stored
# value did not change and PostgreSQL did not log it), a value in text format.
NULL, UNCHANGED_TOAST, TEXT = "n", "u", "t"
_NULL_BYTE, _UNCHANGED_BYTE, _TEXT_BYTE = (ord(k) for k in (NULL, UNCHANGED_TOAST, TEXT))
_INT16, _INT32 = struct.Struct(">h"), struct.Struct(">i")
_REL_ID_KIND = struct.Struct(">IB")  # a row change's relation id and the byte after it


class DecodeError(ArbError):
    """A pgoutput message this decoder does not understand or that is cut short."""


@dataclass(frozen=True, eq=False)  # a singleton: identity is equality, and ``in`` stays in C
class Unchanged:
    """An unchanged TOASTed value: PostgreSQL did not send it. Never the same as NULL."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED = Unchanged()
# A decoded column value: its text, None for NULL, or UNCHANGED (value not sent).
Value = str | None | Unchanged


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # just past the commit record: where a reader resumes after this transaction
    commit_time: datetime


@dataclass(frozen=True)
class Origin:
    commit_lsn: int  # on the origin server
    name: str


@dataclass(frozen=True)
class RelationColumn:
    name: str
    is_key: bool  # part of the replica identity (every column under REPLICA IDENTITY FULL)
    type_oid: int
    type_modifier: int


@dataclass(frozen=True)
class Relation:
    relation_id: int
    namespace: str  # "" for pg_catalog
    name: str
    replica_identity: str  # pg_class.relreplident: d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[RelationColumn, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(frozen=True)
class Type:
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class Insert:
    relation_id: int
    new: tuple[Value, ...]


@dataclass(frozen=True)
class Update:
    relation_id: int
    new: tuple[Value, ...]
    # The old row's replica identity ('K', sent when the update changed it) or the whole old
    # row ('O', under REPLICA IDENTITY FULL); None when neither was sent.
    old: tuple[Value, ...] | None = None
    old_kind: str | None = None  # "K", "O" or None


@dataclass(frozen=True)
class Delete:
    relation_id: int
    old: tuple[Value, ...]  # the key ('K': other columns NULL) or the whole row ('O')
    old_kind: str


@dataclass(frozen=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage


class _Reader:
    """Reads one message's fields in order; running past its end is a DecodeError."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(f"pgoutput message cut short: needed {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return self._take(1)[0]

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def uint32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def lsn(self) -> int:
        return struct.unpack(">Q", self._take(8))[0]

    def timestamp(self) -> datetime:
        return PG_EPOCH + timedelta(microseconds=self.int64())

    def byte(self) -> str:
        return chr(self.int8())

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise DecodeError(f"pgoutput string at offset {self.pos} has no terminating NUL")
        text = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return text

    def done(self, what: str) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"pgoutput {what} message has {len(self.data) - self.pos} unread bytes")


def _tuple_at(data: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    """The TupleData at ``pos`` and the offset past it. The hot path (every row of every
    change): offsets into the bytes, no per-field calls."""
    end = len(data)
    if pos + 2 > end:
        raise DecodeError(f"pgoutput message cut short: tuple data at offset {pos}")
    (ncols,) = _INT16.unpack_from(data, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(ncols):
        if pos >= end:
            break
        kind = data[pos]
        if kind == _TEXT_BYTE:
            if pos + 5 > end:
                break
            (length,) = _INT32.unpack_from(data, pos + 1)
            pos += 5 + length
            if pos > end:
                break
            append(data[pos - length : pos].decode("utf-8"))
        elif kind == _NULL_BYTE:
            pos += 1
            append(None)
        elif kind == _UNCHANGED_BYTE:
            pos += 1
            append(UNCHANGED)
        else:  # 'b' (binary) only when the 'binary' option is on, which we never ask for
            raise DecodeError(f"pgoutput tuple column of unknown kind {chr(kind)!r} ({kind})")
    if len(values) != ncols:
        raise DecodeError(f"pgoutput message cut short: tuple of {ncols} columns ends at {len(values)}")
    return tuple(values), pos


def decode_row_change(tag: int, data: bytes) -> Insert | Update | Delete:
    """An insert, update or delete (nearly every message of a window), read without a _Reader."""
    if len(data) < 6:
        raise DecodeError("pgoutput message cut short: a row change without its relation")
    rel_id, kind = _REL_ID_KIND.unpack_from(data, 1)
    if tag == _INSERT_BYTE:
        if kind != _NEW_BYTE:
            raise DecodeError(f"pgoutput insert: expected 'N', got {chr(kind)!r}")
        new, pos = _tuple_at(data, 6)
        msg: Insert | Update | Delete = Insert(rel_id, new)
    elif tag == _DELETE_BYTE:
        if kind not in _OLD_BYTES:
            raise DecodeError(f"pgoutput delete: expected 'K' or 'O' before the old row, got {chr(kind)!r}")
        old, pos = _tuple_at(data, 6)
        msg = Delete(rel_id, old, chr(kind))
    else:
        old, old_kind, pos = None, None, 6
        if kind in _OLD_BYTES:
            old, pos = _tuple_at(data, 6)
            old_kind = chr(kind)
            kind = data[pos] if pos < len(data) else 0
            pos += 1
        if kind != _NEW_BYTE:
            raise DecodeError(f"pgoutput update: expected 'N' before the new row, got {chr(kind)!r}")
        new, pos = _tuple_at(data, pos)
        msg = Update(rel_id, new, old, old_kind)
    if pos != len(data):
        raise DecodeError(f"pgoutput {type(msg).__name__} message has {len(data) - pos} unread bytes")
    return msg


_INSERT_BYTE, _UPDATE_BYTE, _DELETE_BYTE, _NEW_BYTE = (ord(t) for t in "IUDN")
ROW_CHANGE_TAGS = frozenset((_INSERT_BYTE, _UPDATE_BYTE, _DELETE_BYTE))
_OLD_BYTES = (ord("K"), ord("O"))


def decode(data: bytes) -> Message:
    """One pgoutput message (one row's ``data``) as its dataclass."""
    if not data:
        raise DecodeError("empty pgoutput message")
    if data[0] in ROW_CHANGE_TAGS:
        return decode_row_change(data[0], data)
    r = _Reader(bytes(data))
    tag = r.byte()
    msg: Message
    if tag == "B":
        msg = Begin(final_lsn=r.lsn(), commit_time=r.timestamp(), xid=r.uint32())
    elif tag == "C":
        msg = Commit(flags=r.int8(), commit_lsn=r.lsn(), end_lsn=r.lsn(), commit_time=r.timestamp())
    elif tag == "O":
        msg = Origin(commit_lsn=r.lsn(), name=r.string())
    elif tag == "R":
        rel_id, namespace, name, identity = r.uint32(), r.string(), r.string(), r.byte()
        columns = tuple(
            RelationColumn(
                is_key=bool(r.int8() & 1), name=r.string(), type_oid=r.uint32(), type_modifier=r.int32()
            )
            for _ in range(r.int16())
        )
        msg = Relation(rel_id, namespace, name, identity, columns)
    elif tag == "Y":
        msg = Type(type_oid=r.uint32(), namespace=r.string(), name=r.string())
    elif tag == "T":
        count, options = r.int32(), r.int8()
        ids = tuple(r.uint32() for _ in range(count))
        msg = Truncate(ids, cascade=bool(options & 1), restart_identity=bool(options & 2))
    elif tag == "M":
        transactional, lsn, prefix = bool(r.int8() & 1), r.lsn(), r.string()
        msg = LogicalMessage(transactional, lsn, prefix, r._take(r.int32()))
    else:
        raise DecodeError(
            f"unknown pgoutput message type {tag!r} (byte 0x{ord(tag):02x}); this decoder reads "
            "protocol version 1 (proto_version '1') without streaming or two-phase messages"
        )
    r.done(type(msg).__name__)
    return msg
