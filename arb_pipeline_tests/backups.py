"""Test helpers: real backups built from a real sender database."""

from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete, build_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.apply import LoadResult, load_backup
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect

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
    from arb_pipeline_tests.conftest import _fresh_db

    media, staging = root / "media", root / "staging"
    media.mkdir()
    dsn = _fresh_db(pg, "sender")
    with connect(dsn) as conn:
        seed_reference(conn, seed=seed, scale=0.02)
    return dsn, media, staging


def copy_db(pg, source_dsn: str, prefix: str = "copy") -> str:
    """CREATE DATABASE ... TEMPLATE: a frozen copy of a database (no session may be open on it)."""
    import os
    import time

    import psycopg

    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"
    source = psycopg.conninfo.conninfo_to_dict(source_dsn)["dbname"]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return pg.dsn(name)


def traffic_at(dsn: str, media: Path, seed: int, app_time: datetime, weights: dict, steps: int) -> None:
    """``steps`` app requests with the app's clock set to ``app_time`` (a window that has closed)."""
    from arb_pipeline.dev.generator.workload import Workload

    with Workload(dsn, media, seed=seed, clock_offset=app_time - datetime.now(UTC), weights=weights) as work:
        for _ in range(steps):
            work.step()


def traffic(work, n: int = 120) -> None:
    for _ in range(n):
        work.step()


def wide_window(now: datetime | None = None) -> Window:
    """A window holding everything a test's traffic wrote."""
    now = now or datetime.now(UTC)
    return Window(now - timedelta(hours=2), now + timedelta(hours=2))


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


def make_complete(sender_dsn: str, staging: Path, media: Path) -> BuiltBackup:
    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return build_complete(
        sender_dsn,
        staging,
        partition_key=day.strftime("%Y-%m-%d"),
        window=Window(day - timedelta(days=1), day),
        unique=f"{next(_unique):08d}",
        media_dir=media,
        sender_id="test-sender",
        pg_dump=str(find_bin_dir() / "pg_dump"),
    )


def complete_for_yesterday(dsn: str, staging: Path, media: Path) -> BuiltBackup:
    """A complete backup of yesterday's partition (a key the daily partitions know)."""
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
    )


def manifest_sha256(backup_dir: Path) -> str:
    return hashlib.sha256((Path(backup_dir) / MANIFEST_NAME).read_bytes()).hexdigest()


def load(receiver_dsn: str, built: BuiltBackup) -> LoadResult:
    folder = built.staged.root
    with connect(receiver_dsn) as conn:
        return load_backup(conn, folder, read_manifest(folder), manifest_sha256(folder), dsn=receiver_dsn)
