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
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count

from psycopg import sql

from arb_pipeline.capture.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Relation,
    Truncate,
    Update,
    decode,
    format_lsn,
    parse_lsn,
)
from arb_pipeline.errors import ArbError

PLUGIN = "pgoutput"
CHUNK_CHANGES = 10_000  # messages a first peek asks for; each further peek asks for twice as many
FETCH_ROWS = 1_000  # messages the client holds at a time (server-side cursor)
RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE = "10GB"  # a day of the sender's WAL, several times over
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


_PEEK = (
    "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
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

    Cost: every peek decodes from the slot's position again, each asking for at least twice
    the messages of the last until the window closes, so the server decodes at most about four
    times what the window holds (plus what the last peek's limit takes past it); it keeps each
    result server-side, spilling to disk past work_mem. The client holds ``FETCH_ROWS`` messages
    and the window's transactions, or one transaction when ``consume`` takes each as it ends;
    messages of transactions an earlier peek took are skipped without being decoded.
    """
    if end.tzinfo is None:
        raise CaptureError("read_window: end must be timezone-aware")
    start = _confirmed_position(conn, slot)
    upto = parse_lsn(conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0])
    kept: list[Transaction] = []
    relations: dict[int, Relation] = {}
    done_commit = -1  # commit LSN of the last transaction taken
    last_end = start
    taken = 0
    limit = max(1, chunk_changes)
    with conn.transaction():  # a server-side cursor lives in a transaction
        while True:
            rows, reached_end = 0, False
            begin: Begin | None = None
            changes: list[DecodedChange] = []
            with conn.cursor(name=f"arb_capture_{next(_cursor_names)}") as cur:
                cur.itersize = FETCH_ROWS
                cur.execute(_PEEK, (slot, format_lsn(upto), limit, publication))
                for (data,) in cur:
                    rows += 1
                    if begin is None and data[0] not in _BEGIN_OR_RELATION:
                        continue  # inside a transaction taken already: not worth decoding
                    msg = decode(data)
                    if isinstance(msg, Relation):  # also in a skipped transaction: later ones use it
                        relations[msg.relation_id] = msg
                    elif isinstance(msg, Begin):
                        if msg.final_lsn > done_commit and msg.commit_time >= end:
                            reached_end = True
                            break
                        begin, changes = (msg if msg.final_lsn > done_commit else None), []
                    elif begin is None:
                        continue  # a transaction an earlier peek took already
                    elif isinstance(msg, Commit):
                        if msg.commit_lsn != begin.final_lsn:  # later peeks skip by this LSN
                            raise CaptureError(
                                f"pgoutput commit at {format_lsn(msg.commit_lsn)} does not match its "
                                f"begin's final LSN {format_lsn(begin.final_lsn)}"
                            )
                        txn = Transaction(
                            begin.xid, msg.commit_lsn, msg.end_lsn, msg.commit_time, tuple(changes)
                        )
                        if consume is not None:
                            consume(txn)
                        else:
                            kept.append(txn)
                        taken += 1
                        done_commit, last_end, begin = msg.commit_lsn, msg.end_lsn, None
                    else:
                        changes.extend(_changes_of(msg, relations))
            if reached_end or rows < limit:
                break  # closed, or fewer messages than asked for: the peek read all up to ``upto``
            # peek stops only at a commit, so a large transaction may have overshot the limit
            limit = 2 * max(limit, rows)
    # Read to the flushed WAL with nothing past the window: every transaction that committed
    # before ``upto`` is taken, so the slot may skip to it (WAL of unpublished tables included).
    advance_to = last_end if reached_end else max(last_end, upto, start)
    return CapturedWindow(start, advance_to, tuple(kept), taken, reached_end)


def _changes_of(msg, relations: dict[int, Relation]) -> list[DecodedChange]:
    def relation(rel_id: int) -> Relation:
        if rel_id not in relations:
            raise CaptureError(f"pgoutput sent a change of relation {rel_id} before its Relation message")
        return relations[rel_id]

    if isinstance(msg, (Insert, Update, Delete)):
        return [DecodedChange(relation(msg.relation_id), msg)]
    if isinstance(msg, Truncate):
        return [DecodedChange(relation(rel_id), msg) for rel_id in msg.relation_ids]
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


@dataclass(frozen=True)
class SlotStatus:
    slot: str
    exists: bool
    active: bool = False
    wal_status: str | None = None  # reserved, extended, unreserved or lost
    confirmed_flush_lsn: int | None = None
    restart_lsn: int | None = None
    lag_bytes: int | None = None  # WAL written since the confirmed position: not yet shipped
    retained_wal_bytes: int | None = None  # WAL the server keeps for the slot
    max_slot_wal_keep_size_bytes: int | None = None  # None: -1, unlimited
    problems: tuple[str, ...] = field(default=())

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost"


_STATUS_SQL = """
SELECT s.active, s.wal_status, s.confirmed_flush_lsn::text, s.restart_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
FROM pg_replication_slots s WHERE s.slot_name = %s
"""


def slot_status(conn, slot: str) -> SlotStatus:
    """What the slot costs the server now (``status_of_row`` reads the row)."""
    row = conn.execute(_STATUS_SQL, (slot,)).fetchone()
    return status_of_row(slot, row)


def status_of_row(slot: str, row) -> SlotStatus:
    """A SlotStatus from ``_STATUS_SQL``'s row (None: no such slot). max_slot_wal_keep_size
    comes in MB (pg_settings' unit), -1 for unlimited."""
    if row is None:
        return SlotStatus(slot, exists=False, problems=(f"replication slot {slot} does not exist",))
    active, wal_status, confirmed, restart, lag, retained, keep_mb = row
    problems = []
    if wal_status == "lost":
        problems.append(
            f"replication slot {slot} is lost: the server removed WAL it needed; "
            "drop and recreate it and take a complete, or changes are missed"
        )
    elif wal_status == "unreserved":
        problems.append(
            f"replication slot {slot} is past max_slot_wal_keep_size: its WAL goes at the next checkpoint"
        )
    return SlotStatus(
        slot,
        exists=True,
        active=bool(active),
        wal_status=wal_status,
        confirmed_flush_lsn=parse_lsn(confirmed) if confirmed else None,
        restart_lsn=parse_lsn(restart) if restart else None,
        lag_bytes=lag,
        retained_wal_bytes=retained,
        max_slot_wal_keep_size_bytes=None if keep_mb is None or keep_mb < 0 else keep_mb << 20,
        problems=tuple(problems),
    )


_PREREQ_SQL = """
SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
       current_setting('max_slot_wal_keep_size'), r.rolname, r.rolreplication, r.rolsuper
FROM pg_roles r WHERE r.rolname = current_user
"""
_TABLES_SQL = """
SELECT c.relname, c.relreplident,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
"""


def prerequisites(conn, tables: Iterable[str]) -> list[str]:
    """What keeps change capture of ``tables`` from working on this server, in plain words
    with the command that fixes each; empty when nothing does."""
    tables = list(tables)
    wal_level, max_slots, keep_size, role, can_replicate, superuser = conn.execute(_PREREQ_SQL).fetchone()
    problems = []
    if wal_level != "logical":
        problems.append(
            f"wal_level is {wal_level!r}; logical decoding needs 'logical'. As a superuser run "
            "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL "
            "(e.g. systemctl restart postgresql)"
        )
    if max_slots == 0:
        problems.append(
            "max_replication_slots is 0, so no slot can be created. Run "
            "ALTER SYSTEM SET max_replication_slots = 10; then restart PostgreSQL"
        )
    if keep_size == "-1":
        problems.append(
            "max_slot_wal_keep_size is -1: a slot nobody reads keeps WAL until the disk fills. Run "
            f"ALTER SYSTEM SET max_slot_wal_keep_size = '{RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE}'; "
            "SELECT pg_reload_conf(); (size it for the longest pause of the pipeline you will ride out; "
            "past it the slot is lost and a complete resyncs)"
        )
    if not (can_replicate or superuser):
        problems.append(
            f"role {role} has no REPLICATION right, needed to create and read a replication slot. "
            f'As a superuser run ALTER ROLE "{role}" REPLICATION;'
        )
    found = {name: rest for name, *rest in conn.execute(_TABLES_SQL, (tables,))}
    for table in tables:
        if table not in found:
            problems.append(f"table {table} does not exist in schema public")
            continue
        identity, has_pk, has_identity_index = found[table]
        keyless = (
            identity == "n"
            or (identity == "d" and not has_pk)
            or (identity == "i" and not has_identity_index)
        )
        if keyless:
            problems.append(
                f"table {table} has no primary key or REPLICA IDENTITY, so its updates and deletes "
                "would carry no key (PostgreSQL refuses them once the table is published). Add a primary "
                f'key, or run ALTER TABLE "{table}" REPLICA IDENTITY FULL;'
            )
    return problems
