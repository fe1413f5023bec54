"""The demo in capture mode (ARB_PARTIAL_SOURCE=capture): `arb capture setup` on its sender,
and a parity line over EVERY replicated table.

Captured partials carry every committed change (the bulk "mark declined broken", the token
purges, telemetry), so the demo's traffic is the generator's full mix. With live traffic the
sender is always ahead, and a captured partial's horizon is a WAL position, not a cursor
time, so the parity line is taken at a quiet point: the traffic pauses, the sender's WAL
position L is noted, and once the receiver has loaded a captured partial reaching L (its
``to_lsn``, the ledger's capture_lsn) every replicated table is compared whole
(ops/parity.py); then the traffic resumes.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone

from arb_pipeline.capture.pgoutput import format_lsn, parse_lsn
from arb_pipeline.capture.setup import plan_setup, run_plan
from arb_pipeline.catalog import current_catalog
from arb_pipeline.dev.demo_parity import loaded_through
from arb_pipeline.errors import ConfigError
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline.settings import CaptureSettings

TRAFFIC_S = 60  # traffic between two parity checks
GIVE_UP_S = 300  # a paused check that sees no partial reach L in this long resumes the traffic


def setup_capture(dsn: str) -> list[str]:
    """What `arb capture setup` does, on the demo's sender: the publication and the slot."""
    capture = CaptureSettings.from_env()
    with connect(dsn, autocommit=True) as conn:
        plan = plan_setup(conn, capture.slot, capture.publication, current_catalog().table_names)
        if plan.blocking:
            raise ConfigError("arb capture setup: " + "; ".join(plan.blocking))
        run_plan(conn, plan)
    return [step.why for step in plan.steps]


class TrafficGate:
    """Lets the demo's traffic thread run, or holds it between two operations."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._step = threading.Lock()

    @contextmanager
    def step(self, stop: threading.Event):
        """One operation of the traffic, once the gate is open (or ``stop`` is set)."""
        while not self._open.wait(0.5):
            if stop.is_set():
                break
        with self._step:
            yield

    def close(self) -> None:
        """Hold the traffic; returns once the operation under way has committed."""
        self._open.clear()
        with self._step:
            pass

    def open(self) -> None:
        self._open.set()


class QuietParity:
    """The capture-mode summary: one call per summary interval (see the module docstring)."""

    def __init__(self, sender_dsn: str, receiver_dsn: str, gate: TrafficGate) -> None:
        self.sender_dsn, self.receiver_dsn, self.gate = sender_dsn, receiver_dsn, gate
        self.resumed = time.monotonic()
        self.paused: tuple[float, datetime, int] | None = None  # (monotonic, wall clock, L)

    def summary(self) -> str:
        try:
            return self._summary()
        except Exception as exc:  # the summary must never stop the demo, nor leave the traffic held
            self._resume()
            return f"parity unavailable ({exc})"

    def _summary(self) -> str:
        partials, completes, _ = loaded_through(self.receiver_dsn)
        head = f"loaded {partials} partial and {completes} complete backups"
        if self.paused is None:
            if time.monotonic() - self.resumed < TRAFFIC_S:
                return f"{head}; app traffic running (capture mode: parity of every table at the next pause)"
            self.gate.close()
            with connect(self.sender_dsn, autocommit=True) as conn:
                lsn = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            self.paused = (time.monotonic(), datetime.now(timezone.utc), lsn)
            return f"{head}; app traffic paused at sender LSN {format_lsn(lsn)} until a partial reaches it"
        since, when, lsn = self.paused
        reached = self._loaded_lsn()
        if reached is None or reached < lsn:
            if time.monotonic() - since < GIVE_UP_S:
                return f"{head}; waiting for a captured partial reaching sender LSN {format_lsn(lsn)}"
            self._resume()
            return f"{head}; no captured partial reached sender LSN {format_lsn(lsn)} in {GIVE_UP_S} s"
        report = compare_tables(self.sender_dsn, self.receiver_dsn)
        self._resume()
        when_text = f"parity through {when:%Y-%m-%d %H:%M:%S} UTC"
        if report.ok:
            rows = sum(t.sender.rows for t in report.tables)
            return (
                f"{head}; {when_text}: OK (every replicated table: {rows} rows in {len(report.tables)} "
                f"tables match, at sender LSN {format_lsn(lsn)})"
            )
        short_name = current_catalog().short_name
        drift = ", ".join(
            f"{short_name(t.table)} sender {t.sender.rows} rows, receiver {t.receiver.rows}"
            for t in report.tables
            if not t.ok
        )
        return f"{head}; {when_text}: DIFFERS: {drift}"

    def _loaded_lsn(self) -> int | None:
        with connect(self.receiver_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT max(capture_lsn)::text FROM arb_loaded_backup WHERE kind = 'partial' "
                "AND outcome IN ('loaded', 'superseded')"
            ).fetchone()
        return parse_lsn(row[0]) if row[0] else None

    def _resume(self) -> None:
        self.paused = None
        self.resumed = time.monotonic()
        self.gate.open()
