"""Capture-mode test helpers: a sender set up as `arb capture setup` does, and captured
partials built as the asset builds them."""

from __future__ import annotations

import itertools
import uuid
from contextlib import contextmanager
from pathlib import Path

from arb_pipeline.capture.setup import plan_setup, run_plan
from arb_pipeline.catalog import current_catalog
from arb_pipeline.extract.captured import CaptureSource, build_captured_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.backups import new_sender, wide_window

PUBLICATION = "arb_pipeline"  # per database: each test's sender is a fresh one
_unique = itertools.count()


@contextmanager
def capture_sender(cluster, root: Path, seed: int):
    """(dsn, media, staging, slot): a fresh seeded sender with the publication and a slot of
    its own, as `arb capture setup` makes them; the slot is dropped afterwards."""
    dsn, media, staging = new_sender(cluster, root, seed=seed)
    slot = f"arb_t_{uuid.uuid4().hex[:12]}"
    with connect(dsn, autocommit=True) as conn:
        run_plan(conn, plan_setup(conn, slot, PUBLICATION, current_catalog().table_names))
    try:
        yield dsn, media, staging, slot
    finally:
        with connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )


def captured_partial(
    dsn: str,
    staging: Path,
    media: Path,
    source: CaptureSource,
    *,
    window: Window | None = None,
    key: str | None = None,
    sender_id: str = "test-sender",
    expect_from_lsn: str | None = None,
):
    """A captured partial of ``window`` (by default one holding everything until now)."""
    window = window or wide_window()
    return build_captured_partial(
        dsn,
        staging,
        partition_key=key or window.start.strftime("%Y-%m-%d-%H-%M"),
        window=window,
        unique=f"c{next(_unique):07d}",
        media_dir=media,
        sender_id=sender_id,
        source=source,
        expect_from_lsn=expect_from_lsn,
    )
