"""Change-capture throughput (issue 18): a captured partial's extraction and load, in changed
rows per second. Never used by tests.

    nice -n 19 .venv/bin/python -m bench.capture --rows 100000

One temporary cluster with wal_level=logical holds a sender and a receiver database. After a
pinned complete of the seeded reference data loads, the sender commits ``--rows`` changed
device positions (inserted in transactions of 10k, a fifth of them then updated, a tenth
deleted: about ``--rows`` row changes in all); the captured partial of that is
built from the slot (read, fold, write) and loaded, each timed. ``run(rows)`` returns the
figures for bench.run to print.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arb_pipeline.capture.slot import ensure_publication, ensure_slot
from arb_pipeline.catalog import current_catalog
from arb_pipeline.dev.postgres import LocalPostgres, find_bin_dir
from arb_pipeline.extract.build import build_complete
from arb_pipeline.extract.captured import CaptureSource, build_captured_partial
from arb_pipeline.extract.tables import Window
from arb_pipeline.load.apply import load_backup
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.pg.connect import connect
from arb_pipeline.schema.migrate import apply_migrations

UTC = timezone.utc
TABLE = "AndroidRequests_devicepositionintime"
BATCH = 10_000


def _sha(folder: Path) -> str:
    import hashlib

    return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()


def _load(receiver: str, built) -> tuple[float, object]:
    folder = built.staged.root
    t0 = time.perf_counter()
    with connect(receiver) as conn:
        result = load_backup(conn, folder, read_manifest(folder), _sha(folder), dsn=receiver)
    return time.perf_counter() - t0, result


def _changes(sender: str, rows: int) -> int:
    """Commit about ``rows`` row changes of TABLE; returns how many (inserts, updates, deletes:
    what the slot decodes)."""
    inserts = rows * 10 // 13  # + a fifth updated and a tenth deleted: about ``rows`` changes
    with connect(sender) as conn:
        first = conn.execute(f'SELECT coalesce(max(id), 0) FROM "{TABLE}"').fetchone()[0]
        for done in range(0, inserts, BATCH):
            n = min(BATCH, inserts - done)
            conn.execute(
                f'INSERT INTO "{TABLE}" (longitude, latitude, "timeStamp", "phoneId") '
                "SELECT -70.6 + random() / 10, -33.4 + random() / 10, now(), gen_random_uuid() "
                "FROM generate_series(1, %s)",
                (n,),
            )
            conn.commit()
        updated = conn.execute(
            f'UPDATE "{TABLE}" SET latitude = latitude + 0.001 WHERE id > %s AND id %% 5 = 0', (first,)
        ).rowcount
        conn.commit()
        deleted = conn.execute(f'DELETE FROM "{TABLE}" WHERE id > %s AND id %% 10 = 1', (first,)).rowcount
        conn.commit()
    return inserts + updated + deleted


def run(rows: int = 100_000) -> dict:
    base = Path(tempfile.mkdtemp(prefix="arb-bench-capture-"))
    pg = LocalPostgres(base / "pg", settings={"wal_level": "logical", "synchronous_commit": "on"}).start()
    try:
        from arb_pipeline.dev.generator.reference import seed_reference

        sender, receiver = pg.create_database("sender"), pg.create_database("receiver")
        apply_migrations(sender, "sender")
        apply_migrations(receiver, "receiver")
        with connect(sender) as conn:
            seed_reference(conn, seed=1, scale=0.02)
            conn.commit()
        media, staging = base / "media", base / "staging"
        media.mkdir()
        source = CaptureSource(f"arb_bench_{uuid.uuid4().hex[:8]}", "arb_capture")
        with connect(sender, autocommit=True) as conn:
            ensure_publication(conn, source.publication, current_catalog().table_names)
            ensure_slot(conn, source.slot)
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        complete = build_complete(
            sender,
            staging,
            partition_key=day.strftime("%Y-%m-%d"),
            window=Window(day, day + timedelta(days=1)),
            unique="bench0001",
            media_dir=media,
            sender_id="bench",
            pg_dump=str(find_bin_dir() / "pg_dump"),
            pin_to_slot=True,
        )
        _load(receiver, complete)
        changed = _changes(sender, rows)
        now = datetime.now(UTC)
        window = Window(
            now.replace(second=0, microsecond=0) - timedelta(minutes=5), now + timedelta(minutes=5)
        )
        t0 = time.perf_counter()
        built = build_captured_partial(
            sender,
            staging,
            partition_key=window.start.strftime("%Y-%m-%d-%H-%M"),
            window=window,
            unique="bench0002",
            media_dir=media,
            sender_id="bench",
            source=source,
        )
        extract_s = time.perf_counter() - t0
        load_s, result = _load(receiver, built)
        shipped = sum(f.bytes for f in built.manifest.files)
        return {
            "changed_rows": changed,  # row changes decoded
            "keys_shipped": result.rows_in_backup,  # upserted rows + deleted keys, last change wins
            "rows_in_backup": result.rows_in_backup,
            "transactions": built.manifest.capture.transactions,
            "extract_s": extract_s,
            "load_s": load_s,
            "extract_rows_per_s": changed / extract_s,
            "load_rows_per_s": changed / load_s,
            "end_to_end_rows_per_s": changed / (extract_s + load_s),
            "bytes_shipped": shipped,
        }
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    figures = run(args.rows)
    print(
        f"capture: {figures['changed_rows']} row changes in {figures['transactions']} transactions, "
        f"{figures['keys_shipped']} keys shipped in {figures['bytes_shipped'] / 1e6:.1f} MB\n"
        f"  extract (read slot, fold, write): {figures['extract_s']:.2f} s = "
        f"{figures['extract_rows_per_s']:,.0f} rows/s\n"
        f"  load (stage, upsert, delete, commit): {figures['load_s']:.2f} s = "
        f"{figures['load_rows_per_s']:,.0f} rows/s\n"
        f"  end to end: {figures['end_to_end_rows_per_s']:,.0f} rows/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
