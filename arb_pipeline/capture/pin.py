"""A complete's snapshot pinned to an exact slot position (issue 18: completes and captured
partials interleave by commit LSN).

A temporary logical slot created on a replication connection with ``SNAPSHOT 'export'``
returns its consistent point P and exports a snapshot that sees exactly the transactions
whose commit record lies before P: later ones are what a slot at P decodes. So a complete
taken in that snapshot holds every change with commit LSN < P, and none at or after it; the
receiver compares captured changes' commit LSNs with P. ``pg_export_snapshot`` plus
``pg_current_wal_lsn`` can't say that: a transaction may commit between the two.

The replication protocol's commands only run as simple queries, so they go through libpq's
PQexec (``pgconn.exec_``). The exported snapshot lives while the connection stays open and
runs nothing else; the temporary slot goes with the connection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import pq

from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.slot import PLUGIN, CaptureError
from arb_pipeline.pg.connect import describe_dsn, redact


@dataclass(frozen=True)
class PinnedSnapshot:
    snapshot_id: str  # for SET TRANSACTION SNAPSHOT
    lsn: int  # the consistent point P


@contextmanager
def pinned_snapshot(dsn: str) -> Iterator[PinnedSnapshot]:
    """An exported snapshot and the exact LSN it was taken at, for the with block's length."""
    try:
        conn = psycopg.connect(dsn, replication="database", autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise CaptureError(
            f"cannot open a replication connection to {describe_dsn(dsn)} (a complete pinned to the "
            "slot needs one: the role's REPLICATION right, pg_hba.conf allowing it): "
            f"{redact(str(exc).strip(), dsn)}"
        ) from None
    try:
        name = f"arb_pin_{uuid.uuid4().hex[:16]}"
        res = conn.pgconn.exec_(
            f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL {PLUGIN} (SNAPSHOT 'export')".encode()
        )
        if res.status != pq.ExecStatus.TUPLES_OK:
            raise CaptureError(
                "creating a temporary slot to pin the complete's snapshot failed: "
                f"{(res.error_message or b'').decode(errors='replace').strip()}"
            )
        # columns: slot_name, consistent_point, snapshot_name, output_plugin
        lsn, snapshot = res.get_value(0, 1).decode(), res.get_value(0, 2).decode()
        yield PinnedSnapshot(snapshot, parse_lsn(lsn))
    finally:
        conn.close()
