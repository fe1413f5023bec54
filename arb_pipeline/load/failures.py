"""Quarantine or retry: what the database's refusal of a load says about the backup.

Decided once, here, from the error's SQLSTATE, for every place a load talks to the server
(staging, merging, deleting). A refusal caused by the backup's own content fails the same way
on every try, so the backup is quarantined: a value the column type can't take (class 22),
a key or reference the data breaks (23, 21000), a value past a server limit such as JSON
nested too deeply (54), or column names PostgreSQL can't tell apart (two names equal in
their first 63 characters: 42701). Everything else is outside the backup (server down or
restarting, disk full, out of memory, a lock, the receiver's schema or role behind) and the
backup waits in the inbox for the next try; so does an error without a SQLSTATE (a lost
connection).
"""

from __future__ import annotations

import psycopg

# SQLSTATE classes (first two characters) and codes whose cause is the backup's content.
BACKUP_CLASSES = frozenset({"22", "23", "54"})
BACKUP_CODES = frozenset({"21000", "42701", "42P16"})  # cardinality, duplicate column, bad table definition


def backup_at_fault(exc: BaseException) -> bool:
    """True when the server refused the backup's own data: every retry would fail the same way."""
    state = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    if not state:
        return False
    return state[:2] in BACKUP_CLASSES or state in BACKUP_CODES


def server_message(exc: psycopg.Error) -> str:
    """The server's own words, with the table and column it names."""
    diag = exc.diag
    where = ""
    if diag.table_name:
        where = f" (table {diag.table_name}{f', column {diag.column_name}' if diag.column_name else ''})"
    text = (diag.message_primary or str(exc)).strip()
    return f"{text}{where} [SQLSTATE {exc.sqlstate or 'none'}]"
