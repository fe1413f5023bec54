"""The replication slot and publication of change capture, through plain SQL (psycopg 3).

The slot is the sender's memory of what has been shipped: its confirmed position moves only by
``advance``, which the caller runs after a window's backup is published, never by reading
(``read_window`` peeks, it never gets). A crash between publish and advance re-reads the same
transactions: the receiver's loads are idempotent. A slot keeps every WAL segment from its
restart position on the server's disk, so ``slot_status`` reports what it costs and
``prerequisites`` asks for ``max_slot_wal_keep_size``.

The publication must exist before the slot's position is decoded (pgoutput looks it up as it
was at each change), and a table added to it later is published only from that point on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import count

import psycopg
from psycopg import sql

from arb_pipeline.capture.pgoutput import (
    ROW_CHANGE_TAGS,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Relation,
    Truncate,
    Update,
    decode,
    decode_row_change,
    format_lsn,
    parse_lsn,
)
from arb_pipeline.capture.status import (  # re-exported: callers import them from here too
    RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE as RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE,
)
from arb_pipeline.capture.status import SlotStatus as SlotStatus
from arb_pipeline.capture.status import prerequisites as prerequisites
from arb_pipeline.capture.status import slot_status as slot_status
from arb_pipeline.capture.status import status_of_row as status_of_row
from arb_pipeline.errors import ArbError

PLUGIN = "pgoutput"
CHUNK_CHANGES = 10_000  # messages a first batch asks for; each further batch asks for twice as many
FETCH_ROWS = 5_000  # messages the client holds at a time (server-side cursor)
_cursor_names = count()
_BEGIN_OR_RELATION = (ord("B"), ord("R"))


class CaptureError(ArbError):
    pass


@dataclass(frozen=True)
class SlotInfo:
    created: bool  # False: it existed already
    position: int  # created: its consistent point; existed: its confirmed position


@dataclass(frozen=True)
class DecodedChange:
    relation: Relation | None  # None for a logical message
    message: Insert | Update | Delete | Truncate | LogicalMessage


@dataclass(frozen=True)
class Transaction:
    xid: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime
    changes: tuple[DecodedChange, ...]


@dataclass(frozen=True)
class CapturedWindow:
    """What ``read_window`` read: the window's transactions and where the slot goes next."""

    start_lsn: int  # the slot's confirmed position when read
    advance_to: int  # advance the slot here once the window's backup is published
    transactions: tuple[Transaction, ...]  # empty when a ``consume`` callback took them
    transaction_count: int
    # True: a transaction that committed at or after ``end`` was seen, so the window is closed;
    # False: the slot was read to the server's flushed WAL with nothing past ``end``.
    reached_end: bool


def _slot_row(conn, slot: str):
    return conn.execute(
        "SELECT plugin, database = current_database(), confirmed_flush_lsn::text, wal_status "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()


def publication_change(conn, name: str, tables: Iterable[str]) -> tuple[sql.Composed | None, list[str]]:
    """The statement that makes publication ``name`` cover ``tables`` (schema public), and the
    tables it adds; (None, []) when it covers them already. Nothing is run (setup's dry run)."""
    tables = list(tables)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if exists:
        have = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = 'public'",
                (name,),
            )
        }
        missing = [t for t in tables if t not in have]
    else:
        missing = tables
    if not missing:
        return None, []
    verb = "ALTER PUBLICATION {} ADD TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    targets = sql.SQL(", ").join(sql.Identifier("public", t) for t in missing)
    return sql.SQL(verb).format(sql.Identifier(name), targets), missing


def ensure_publication(conn, name: str, tables: Iterable[str]) -> list[str]:
    """The publication ``name`` FOR TABLE ``tables`` (schema public), created or completed;
    returns the tables it added (none: it was complete already)."""
    statement, missing = publication_change(conn, name, tables)
    if statement is not None:
        conn.execute(statement)
    return missing


def ensure_slot(conn, slot: str) -> SlotInfo:
    """The logical slot ``slot`` with pgoutput in this database, created when missing.

    Creating one waits for the transactions running at that moment to end; run it on a
    connection that has written nothing in its current transaction (autocommit is simplest).
    """
    row = _slot_row(conn, slot)
    if row:
        plugin, same_db, confirmed, _ = row
        if plugin != PLUGIN or not same_db:
            raise CaptureError(
                f"replication slot {slot} exists but is not a {PLUGIN} slot of this database "
                f"(plugin {plugin}); choose another slot name or drop it with "
                f"SELECT pg_drop_replication_slot('{slot}')"
            )
        return SlotInfo(created=False, position=parse_lsn(confirmed))
    lsn = conn.execute(
        "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, %s)", (slot, PLUGIN)
    ).fetchone()[0]
    return SlotInfo(created=True, position=parse_lsn(lsn))


def _confirmed_position(conn, slot: str) -> int:
    row = _slot_row(conn, slot)
    if not row:
        raise CaptureError(
            f"replication slot {slot} does not exist; create it (ensure_slot) and take a complete"
        )
    if row[3] == "lost" or row[2] is None:
        raise CaptureError(
            f"replication slot {slot} is lost: the server removed WAL it still needed "
            "(max_slot_wal_keep_size); drop and recreate it, and take a complete"
        )
    return parse_lsn(row[2])


_CHANGES = (  # {} is peek (the slot itself) or get (a temporary copy of it)
    "SELECT data FROM pg_logical_slot_{}_binary_changes(%s, %s::pg_lsn, %s, "
    "'proto_version', '1', 'publication_names', %s)"
)


def read_window(
    conn,
    slot: str,
    publication: str,
    end: datetime,
    *,
    chunk_changes: int = CHUNK_CHANGES,
    consume: Callable[[Transaction], None] | None = None,
) -> CapturedWindow:
    """The transactions that committed before ``end``, from the slot's confirmed position on,
    whole and in commit order; the slot does not move.

    The window closes at the first transaction (in commit order) whose commit time is at or
    after ``end``: it and everything after it belong to later windows, so nothing is skipped
    even if commit times are a few microseconds out of commit order. Only WAL flushed when the
    read starts is decoded, so rereading before ``advance`` gives the same transactions.

    Cost: the read goes in batches, each asking for at least twice the messages of the last
    until the window closes; the server keeps each batch's result server-side, spilling to disk
    past work_mem. The batches are read from a temporary copy of the slot with
    ``pg_logical_slot_get_binary_changes``, so each continues where the last stopped and the
    server decodes the window once (plus what the last batch's limit takes past it); the copy
    moves, the slot never does, and the copy is dropped after. With no slot free for the copy
    (max_replication_slots), the slot itself is peeked: every peek decodes from its position
    again, about four times the window in all. The client holds ``FETCH_ROWS`` messages and the
    window's transactions, or one transaction when ``consume`` takes each as it ends; messages
    of transactions an earlier peek took are skipped without being decoded.
    """
    if end.tzinfo is None:
        raise CaptureError("read_window: end must be timezone-aware")
    start = _confirmed_position(conn, slot)
    upto = parse_lsn(conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0])
    read = _WindowRead(end, consume)
    limit = max(1, chunk_changes)
    copy = reading_copy(conn, slot)
    query = _CHANGES.format("get" if copy else "peek")
    try:
        with conn.transaction():  # a server-side cursor lives in a transaction
            while True:
                with conn.cursor(name=f"arb_capture_{next(_cursor_names)}") as cur:
                    # binary: the bytea arrives as it is, not as hex for the client to undo
                    cur.execute(query, (copy or slot, format_lsn(upto), limit, publication), binary=True)
                    rows, reached_end = read.batch(cur)
                if reached_end or rows < limit:
                    break  # closed, or fewer messages than asked for: read all up to ``upto``
                # a batch stops only at a commit, so a large transaction may have overshot the limit
                limit = 2 * max(limit, rows)
    finally:
        if copy:
            _drop_copy(conn, copy)
    last_end = read.last_end if read.taken else start
    # Read to the flushed WAL with nothing past the window: every transaction that committed
    # before ``upto`` is taken, so the slot may skip to it (WAL of unpublished tables included).
    advance_to = last_end if reached_end else max(last_end, upto, start)
    return CapturedWindow(start, advance_to, tuple(read.kept), read.taken, reached_end)


def reading_copy(conn, slot: str) -> str | None:
    """A temporary copy of ``slot`` at its position, for ``read_window`` to read in batches;
    None when it can't be made (all max_replication_slots in use, say). read_window then peeks
    the slot itself; a refusal that is about the slot (a missing right) refuses the peek too,
    with PostgreSQL's reason."""
    name = f"arb_read_{conn.info.backend_pid}_{next(_cursor_names)}"
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
            conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s, true)", (slot, name))
    except psycopg.DatabaseError:  # e.g. all max_replication_slots in use
        return None
    return name


def _drop_copy(conn, copy: str) -> None:
    # A temporary slot goes with its session, and PostgreSQL drops it on an error in it already.
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND temporary",
            (copy,),
        )


class _WindowRead:
    """What ``read_window``'s batches have taken so far. A peek starts at the slot's position
    again, so the transactions an earlier one took are skipped by their commit LSN."""

    def __init__(self, end: datetime, consume: Callable[[Transaction], None] | None):
        self.end, self.consume = end, consume
        self.kept: list[Transaction] = []
        self.relations: dict[int, Relation] = {}  # each batch sends one only before its first use
        self.done_commit = -1  # commit LSN of the last transaction taken
        self.last_end = -1
        self.taken = 0

    def batch(self, cur) -> tuple[int, bool]:
        """Read one batch's messages; returns how many, and whether the window closed."""
        rows = 0
        begin: Begin | None = None
        changes: list[DecodedChange] = []
        relations = self.relations
        while batch := cur.fetchmany(FETCH_ROWS):
            for (data,) in batch:
                rows += 1
                tag = data[0]
                if tag in ROW_CHANGE_TAGS:  # nearly every message: decoded inline, no dispatch
                    if begin is not None:
                        msg = decode_row_change(tag, data)
                        changes.append(DecodedChange(_relation(relations, msg.relation_id), msg))
                    continue  # else inside a transaction taken already: not worth decoding
                if begin is None and tag not in _BEGIN_OR_RELATION:
                    continue
                msg = decode(data)
                if isinstance(msg, Relation):  # also in a skipped transaction: later ones use it
                    relations[msg.relation_id] = msg
                elif isinstance(msg, Begin):
                    if msg.final_lsn > self.done_commit and msg.commit_time >= self.end:
                        return rows, True
                    begin, changes = (msg if msg.final_lsn > self.done_commit else None), []
                elif begin is None:
                    continue  # a transaction an earlier peek took already
                elif isinstance(msg, Commit):
                    self._take(begin, msg, changes)
                    begin = None
                else:
                    changes.extend(_changes_of(msg, relations))
        return rows, False

    def _take(self, begin: Begin, commit: Commit, changes: list[DecodedChange]) -> None:
        if commit.commit_lsn != begin.final_lsn:  # later peeks skip by this LSN
            raise CaptureError(
                f"pgoutput commit at {format_lsn(commit.commit_lsn)} does not match its "
                f"begin's final LSN {format_lsn(begin.final_lsn)}"
            )
        txn = Transaction(begin.xid, commit.commit_lsn, commit.end_lsn, commit.commit_time, tuple(changes))
        if self.consume is not None:
            self.consume(txn)
        else:
            self.kept.append(txn)
        self.taken += 1
        self.done_commit, self.last_end = commit.commit_lsn, commit.end_lsn


def _relation(relations: dict[int, Relation], rel_id: int) -> Relation:
    relation = relations.get(rel_id)
    if relation is None:
        raise CaptureError(f"pgoutput sent a change of relation {rel_id} before its Relation message")
    return relation


def _changes_of(msg, relations: dict[int, Relation]) -> list[DecodedChange]:
    """The changes a message other than a row change carries (a row change: decoded inline)."""
    if isinstance(msg, Truncate):
        return [DecodedChange(_relation(relations, rel_id), msg) for rel_id in msg.relation_ids]
    if isinstance(msg, LogicalMessage):
        return [DecodedChange(None, msg)]
    return []  # Type and Origin messages say nothing a change set needs


def advance(conn, slot: str, lsn: int) -> int:
    """Move the slot's confirmed position to ``lsn`` (never backwards); returns the new position."""
    current = _confirmed_position(conn, slot)
    if lsn < current:
        raise CaptureError(
            f"refusing to move replication slot {slot} backwards, from {format_lsn(current)} to "
            f"{format_lsn(lsn)}: the transactions in between were shipped already"
        )
    if lsn == current:
        return current
    moved = conn.execute(
        "SELECT end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, format_lsn(lsn))
    ).fetchone()[0]
    return parse_lsn(moved)
