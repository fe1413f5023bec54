"""The pgoutput decoder on messages built byte by byte, as the PostgreSQL 15 documentation lays
them out ("Logical Replication Message Formats"): what a live server rarely sends (Type, Origin,
logical messages, truncate options) and what must never pass silently."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import pytest

from arb_pipeline.capture.pgoutput import (
    UNCHANGED,
    Begin,
    Commit,
    DecodeError,
    Delete,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
    format_lsn,
    parse_lsn,
)

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
MICROS = int((T0 - datetime(2000, 1, 1, tzinfo=timezone.utc)).total_seconds()) * 1_000_000


def _s(text: str) -> bytes:
    return text.encode() + b"\0"


def _tuple(*values) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            out += b"t" + struct.pack(">i", len(v.encode())) + v.encode()
    return out


def test_begin_commit_and_lsns():
    begin = decode(b"B" + struct.pack(">QqI", 0x1_0000_0010, MICROS, 4242))
    assert begin == Begin(final_lsn=0x1_0000_0010, commit_time=T0, xid=4242)
    commit = decode(b"C" + struct.pack(">bQQq", 0, 0x1_0000_0010, 0x1_0000_0040, MICROS))
    assert commit == Commit(0, 0x1_0000_0010, 0x1_0000_0040, T0)
    assert format_lsn(0x1_0000_0040) == "1/40" and parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848


def test_relation_type_origin_and_logical_message():
    rel = decode(
        b"R"
        + struct.pack(">I", 16400)
        + _s("public")
        + _s("t")
        + b"d"
        + struct.pack(">h", 2)
        + b"\x01"
        + _s("id")
        + struct.pack(">Ii", 23, -1)
        + b"\x00"
        + _s("note")
        + struct.pack(">Ii", 25, -1)
    )
    assert isinstance(rel, Relation) and rel.column_names == ("id", "note") and rel.replica_identity == "d"
    assert [c.is_key for c in rel.columns] == [True, False] and rel.columns[1].type_oid == 25
    mood = Type(90001, "public", "mood")
    assert decode(b"Y" + struct.pack(">I", 90001) + _s("public") + _s("mood")) == mood
    assert decode(b"O" + struct.pack(">Q", 77) + _s("elsewhere")) == Origin(77, "elsewhere")
    msg = decode(b"M" + b"\x01" + struct.pack(">Q", 99) + _s("arb") + struct.pack(">i", 3) + b"abc")
    assert msg == LogicalMessage(True, 99, "arb", b"abc")


def test_tuples_keep_null_and_unchanged_toast_apart():
    upd = decode(b"U" + struct.pack(">I", 16400) + b"O" + _tuple("1", "old") + b"N" + _tuple("1", UNCHANGED))
    assert upd == Update(16400, new=("1", UNCHANGED), old=("1", "old"), old_kind="O")
    assert upd.new[1] is not None
    plain = decode(b"U" + struct.pack(">I", 16400) + b"N" + _tuple("2", None))
    assert plain.old is None and plain.new == ("2", None)
    gone = decode(b"D" + struct.pack(">I", 16400) + b"K" + _tuple("3", None))
    assert gone == Delete(16400, ("3", None), "K")
    assert decode(b"I" + struct.pack(">I", 1) + b"N" + _tuple("é")).new == ("é",)


def test_truncate_options():
    msg = decode(b"T" + struct.pack(">ib", 2, 3) + struct.pack(">II", 16400, 16401))
    assert msg == Truncate((16400, 16401), cascade=True, restart_identity=True)


INSERT_1 = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1)  # an insert of one column, to come


@pytest.mark.parametrize(
    "data, error",
    [
        (b"S\x00\x00\x00\x01", r"unknown pgoutput message type 'S' \(byte 0x53\)"),
        (b"B\x00\x00", "cut short"),
        (INSERT_1 + b"t" + struct.pack(">i", 10) + b"abc", "tuple of 1 columns"),  # 10 bytes promised
        (b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 2) + b"n", "cut short"),
        (INSERT_1 + b"b", "unknown kind 'b'"),
        (b"C" + struct.pack(">bQQq", 0, 1, 2, 3) + b"!", "1 unread bytes"),
        (INSERT_1 + b"n!", "Insert message has 1 unread bytes"),
        (b"I" + struct.pack(">I", 1) + b"K" + struct.pack(">h", 0), "insert: expected 'N'"),
        (b"U" + struct.pack(">I", 1) + b"O" + struct.pack(">h", 0), "update: expected 'N'"),
        (b"D" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 0), "delete: expected 'K' or 'O'"),
        (b"U\x00\x00", "without its relation"),
        (b"", "empty"),
    ],
)
def test_what_it_does_not_understand_is_an_error_naming_it(data, error):
    with pytest.raises(DecodeError, match=error):
        decode(data)
