"""What a replication slot costs the server (``slot_status``: its lag and the WAL it keeps) and
what the server lacks for change capture (``prerequisites``, in plain words with each fix)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from arb_pipeline.capture.pgoutput import parse_lsn

RECOMMENDED_MAX_SLOT_WAL_KEEP_SIZE = "10GB"  # a day of the sender's WAL, several times over


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
