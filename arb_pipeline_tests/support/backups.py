"""Real backups built from a real sender database, and loaded straight into a receiver."""

from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete, build_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.apply import LoadResult, load_backup
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.support.postgres import fresh_db

UTC = timezone.utc
_unique = itertools.count()
P = "AndroidRequests_"
PARTIAL_TABLES = [
    P + t
    for t in (
        "eventforbusstop",
        "eventforbusv2",
        "stadisticdatafromregistrationbusstop",
        "stadisticdatafromregistrationbus",
        "report",
    )
]


@contextmanager
def seeded_sender(sender_dsn: str, tmp_path: Path, seed: int):
    """A sender with small reference data and a Workload on it: yields (dsn, media, work)."""
    from arb_pipeline.dev.generator.reference import seed_reference
    from arb_pipeline.dev.generator.workload import Workload

    media = tmp_path / "media"
    media.mkdir()
    with connect(sender_dsn) as conn:
        seed_reference(conn, seed=seed, scale=0.02)
    with Workload(sender_dsn, media, seed=seed) as work:
        yield sender_dsn, media, work


def new_sender(pg, root: Path, seed: int) -> tuple[str, Path, Path]:
    """A fresh sender database with small reference data: (dsn, media folder, staging folder)."""
    from arb_pipeline.dev.generator.reference import seed_reference

    media, staging = root / "media", root / "staging"
    media.mkdir()
    dsn = fresh_db(pg, "sender")
    with connect(dsn) as conn:
        seed_reference(conn, seed=seed, scale=0.02)
    return dsn, media, staging


def wide_window(now: datetime | None = None) -> Window:
    """A window holding everything a test's traffic wrote. It starts on a whole minute, as the
    partition key named after it does (the receiver checks that window and key agree)."""
    now = now or datetime.now(UTC)
    return Window((now - timedelta(hours=2)).replace(second=0, microsecond=0), now + timedelta(hours=2))


def make_partial(
    sender_dsn: str,
    staging: Path,
    media: Path,
    window: Window | None = None,
    overlap: timedelta = timedelta(0),
) -> BuiltBackup:
    window = window or wide_window()
    key = window.start.strftime("%Y-%m-%d-%H-%M")
    return build_partial(
        sender_dsn,
        staging,
        partition_key=key,
        window=window,
        unique=f"{next(_unique):08d}",
        media_dir=media,
        sender_id="test-sender",
        overlap=overlap,
    )


def window_of(key: str) -> Window:
    """The window of a 5-minute partition key."""
    tw = PARTIAL.time_window_for_partition_key(key)
    return Window(tw.start, tw.end)


def partial_for(dsn: str, staging: Path, media: Path, key: str, unique: str) -> BuiltBackup:
    """The partial backup of the 5-minute partition ``key``, as the sender's asset builds it."""
    return build_partial(
        dsn,
        staging,
        partition_key=key,
        window=window_of(key),
        unique=unique,
        media_dir=media,
        sender_id="test-sender",
    )


def complete_for_yesterday(
    dsn: str, staging: Path, media: Path, fingerprints: bool = False, pin_to_slot: bool = False
) -> BuiltBackup:
    """A complete backup of yesterday's partition (a key the daily partitions know); with
    ``fingerprints``, its manifest carries the sender's per-table digests; with
    ``pin_to_slot``, its capture_lsn (capture mode: a wal_level=logical sender)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    return build_complete(
        dsn,
        staging,
        partition_key=yesterday.strftime("%Y-%m-%d"),
        window=Window(yesterday, today),
        unique=f"{next(_unique):08d}",
        media_dir=media,
        sender_id="test-sender",
        pg_dump=str(find_bin_dir() / "pg_dump"),
        fingerprints=fingerprints,
        pin_to_slot=pin_to_slot,
    )


def manifest_sha256(backup_dir: Path) -> str:
    return hashlib.sha256((Path(backup_dir) / MANIFEST_NAME).read_bytes()).hexdigest()


def load(receiver_dsn: str, built: BuiltBackup) -> LoadResult:
    folder = built.staged.root
    with connect(receiver_dsn) as conn:
        return load_backup(conn, folder, read_manifest(folder), manifest_sha256(folder), dsn=receiver_dsn)
