"""The change-capture slot in ``arb check`` (sender): its lag, retained WAL and wal_status, a
FAIL past ARB_CAPTURE_MAX_LAG_MB or when lost, a WARN while max_slot_wal_keep_size is -1.
Nothing at all where capture was never set up (no slot, no publication), unless
ARB_PARTIAL_SOURCE is capture: then its partials would fail, and that is a FAIL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg

from arb_pipeline.ops.preflight.item import FAIL, OK, WARN, Item, problem_items


def capture_items(dsn: str) -> Iterator[Item]:
    from arb_pipeline.capture.health import read_slot_health
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.settings import PARTIAL_SOURCE, CaptureSettings, SettingError

    problems: list[SettingError] = []
    capture = CaptureSettings.from_env(problems=problems)
    yield from problem_items(problems)
    if problems or not dsn:  # a missing DSN has its FAIL above
        return
    try:
        with connect(dsn, autocommit=True) as conn:
            health = read_slot_health(conn, capture.slot, capture.publication, capture.max_lag_mb)
    except ArbError:  # the database's own item says why it can't be reached
        return
    except psycopg.Error as exc:  # reachable, but the catalog lookup failed: say so, don't crash
        yield Item("ARB_CAPTURE_SLOT", FAIL, f"can't read the slot's status: {exc}", "see the message")
        return
    if not health.set_up:
        try:
            needed = PARTIAL_SOURCE.read() == "capture"
        except SettingError:  # the sender's settings items name a bad value
            needed = False
        if needed:
            yield Item(
                "ARB_CAPTURE_SLOT",
                FAIL,
                f"ARB_PARTIAL_SOURCE is capture but there is no replication slot {capture.slot}",
                "run `arb capture setup` (then a complete), or set ARB_PARTIAL_SOURCE=timestamp",
            )
        return
    s = health.status
    metrics = {"capture_lag_bytes": s.lag_bytes, "capture_retained_wal_bytes": s.retained_wal_bytes}
    if health.problems:
        for f in health.problems:
            yield Item("ARB_CAPTURE_SLOT", FAIL, f"{f.problem} ({health.figures()})", f.fix, metrics)
    else:
        yield Item("ARB_CAPTURE_SLOT", OK, health.figures(), metrics=metrics)
    for f in health.warnings:
        yield Item("max_slot_wal_keep_size", WARN, f.problem, f.fix)
