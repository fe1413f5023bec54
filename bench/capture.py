"""Change-capture throughput (issue 18): a captured partial's extraction and load, in changed
rows per second; and the bytes a window ships in capture mode against timestamp mode, on the
same app traffic. Never used by tests.

    nice -n 19 .venv/bin/python -m bench.capture --rows 100000 --windows 4

One temporary cluster with wal_level=logical holds a sender and a receiver database. After a
pinned complete of the seeded reference data loads, the sender commits ``--rows`` changed
device positions (inserted in transactions of 10k, a fifth of them then updated, a tenth
deleted: about ``--rows`` row changes in all); the captured partial of that is
built from the slot (read, fold, write) and loaded, each timed. ``run(rows)`` and
``bytes_per_window()`` return the figures; ``throughput_line`` and ``bytes_line`` are what
bench.run prints of them. Each starts its own small cluster.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arb_pipeline.capture.pgoutput import parse_lsn
from arb_pipeline.capture.slot import advance, ensure_publication, ensure_slot, read_window
from arb_pipeline.catalog import current_catalog
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.dev.postgres import LocalPostgres, find_bin_dir
from arb_pipeline.extract.build import build_complete, build_partial
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


@contextmanager
def _capture_world(prefix: str):
    """A temporary wal_level=logical cluster: (its sender dsn with the seeded reference data,
    published, and a slot; a receiver dsn; the source; media and staging folders)."""
    from arb_pipeline.dev.generator.reference import seed_reference

    base = Path(tempfile.mkdtemp(prefix=prefix))
    pg = LocalPostgres(base / "pg", settings={"wal_level": "logical", "synchronous_commit": "on"}).start()
    try:
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
        yield sender, receiver, source, media, staging
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def run(rows: int = 100_000) -> dict:
    with _capture_world("arb-bench-capture-") as (sender, receiver, source, media, staging):
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
        t0, cpu0 = time.perf_counter(), time.process_time()
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
        extract_s, extract_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        load_s, result = _load(receiver, built)
        shipped = sum(f.bytes for f in built.manifest.files)
        return {
            "changed_rows": changed,  # row changes decoded
            "keys_shipped": result.rows_in_backup,  # upserted rows + deleted keys, last change wins
            "rows_in_backup": result.rows_in_backup,
            "transactions": built.manifest.capture.transactions,
            "extract_s": extract_s,
            # this process's CPU (not the server's): what wall seconds mean on a loaded machine
            "extract_cpu_s": extract_cpu_s,
            "load_s": load_s,
            "extract_rows_per_s": changed / extract_s,
            "load_rows_per_s": changed / load_s,
            "end_to_end_rows_per_s": changed / (extract_s + load_s),
            "bytes_shipped": shipped,
        }


def bytes_per_window(windows: int = 4, window_s: float = 10.0, rate: float = 40.0, seed: int = 7) -> dict:
    """Bytes and rows one window ships in each mode, on the same app traffic.

    The generator's full traffic (the bulk "mark declined broken" update and token purges
    included) runs at ``rate`` requests/s in a thread while, as each ``window_s`` window closes,
    a timestamp partial (overlap three windows, production's 15 minutes over 5) and a captured
    partial of that window are built, the slot advanced past it. Three windows of traffic come
    first, so the first window's overlap is full; the slot is read past them, not measured.
    """
    overlap = timedelta(seconds=3 * window_s)
    grace = 1.0  # seconds past a window's end before building: its last requests have committed
    with _capture_world("arb-bench-capture-bytes-") as (sender, _, source, media, staging):
        t0 = datetime.now(UTC) + overlap
        traffic_s = (t0 - datetime.now(UTC)).total_seconds() + windows * window_s + grace
        stop = threading.Event()
        with Workload(sender, media, seed=seed) as work:
            runner = threading.Thread(target=lambda: _traffic(work, rate, traffic_s, stop), daemon=True)
            runner.start()
            try:
                _sleep_until(t0 + timedelta(seconds=grace))
                with connect(sender, autocommit=True) as conn:  # warm-up: not measured
                    advance(
                        conn, source.slot, read_window(conn, source.slot, source.publication, t0).advance_to
                    )
                per_window = []
                for k in range(windows):
                    window = Window(
                        t0 + k * timedelta(seconds=window_s), t0 + (k + 1) * timedelta(seconds=window_s)
                    )
                    _sleep_until(window.end + timedelta(seconds=grace))
                    key, unique = window.start.strftime("%Y-%m-%d-%H-%M-%S"), f"bytes{k:03d}"
                    common = dict(partition_key=key, window=window, media_dir=media, sender_id="bench")
                    stamped = build_partial(sender, staging, unique=f"t{unique}", overlap=overlap, **common)
                    captured = build_captured_partial(
                        sender, staging, unique=f"c{unique}", source=source, **common
                    )
                    with connect(sender, autocommit=True) as conn:
                        advance(conn, source.slot, parse_lsn(captured.manifest.capture.to_lsn))
                    per_window.append((_shipped(stamped.manifest), _shipped(captured.manifest)))
            finally:
                stop.set()
                runner.join()
    stamped_tables = set().union(*(w[0]["tables"] for w in per_window))
    totals = {
        mode: {
            "bytes": sum(w[i]["bytes"] for w in per_window),
            "rows": sum(w[i]["rows"] for w in per_window),
            # only the tables timestamp partials carry: the overlap's re-shipping alone
            "bytes_same_tables": sum(
                b for w in per_window for t, b in w[i]["tables"].items() if t in stamped_tables
            ),
        }
        for i, mode in enumerate(("timestamp", "capture"))
    }
    return {"windows": windows, "window_s": window_s, "rate": rate, "per_window": per_window, **totals}


def _traffic(work: Workload, rate: float, seconds: float, stop: threading.Event) -> None:
    start = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        work.step()
        i += 1


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def _shipped(manifest) -> dict:
    """What a backup ships: bytes (table files and media), table rows, bytes per table."""
    tables: dict[str, int] = {}
    for f in manifest.files:
        if f.table:
            tables[f.table] = tables.get(f.table, 0) + f.bytes
    return {
        "bytes": sum(f.bytes for f in manifest.files),
        "rows": sum(f.rows or 0 for f in manifest.files if f.kind in ("table", "deletes")),
        "tables": tables,
    }


def throughput_line(figures: dict) -> str:
    """``run``'s figures as one line (bench.run prints it)."""
    return (
        f"{figures['end_to_end_rows_per_s']:,.0f} rows/s (target >= 50,000): extract "
        f"{figures['extract_rows_per_s']:,.0f} rows/s ({figures['extract_s']:.2f} s, "
        f"{figures['extract_cpu_s']:.2f} s of client CPU), load "
        f"{figures['load_rows_per_s']:,.0f} rows/s ({figures['load_s']:.2f} s); "
        f"{figures['changed_rows']:,} row changes, {figures['keys_shipped']:,} keys shipped"
    )


def bytes_line(figures: dict) -> str:
    """``bytes_per_window``'s figures as one line (bench.run prints it)."""
    n = figures["windows"]
    ts, cap = figures["timestamp"], figures["capture"]
    return (
        f"capture {cap['bytes'] / n / 1e3:,.1f} kB and {cap['rows'] / n:,.0f} rows per window, "
        f"timestamp {ts['bytes'] / n / 1e3:,.1f} kB and {ts['rows'] / n:,.0f} rows: "
        f"{cap['bytes'] / ts['bytes']:.2f}x the bytes; on the tables timestamp partials carry, "
        f"{cap['bytes_same_tables'] / ts['bytes_same_tables']:.2f}x "
        f"({n} windows of {figures['window_s']:g} s, overlap 3 windows, {figures['rate']:g} app requests/s)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="row changes for the throughput (0: skip)")
    parser.add_argument("--windows", type=int, default=4, help="windows for the bytes comparison (0: skip)")
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="app requests per second")
    args = parser.parse_args(argv)
    if args.rows:
        figures = run(args.rows)
        print(
            f"capture: {figures['changed_rows']} row changes in {figures['transactions']} transactions, "
            f"{figures['keys_shipped']} keys shipped in {figures['bytes_shipped'] / 1e6:.1f} MB\n"
            f"  extract (read slot, fold, write): {figures['extract_s']:.2f} s = "
            f"{figures['extract_rows_per_s']:,.0f} rows/s ({figures['extract_cpu_s']:.2f} s of client CPU)\n"
            f"  load (stage, upsert, delete, commit): {figures['load_s']:.2f} s = "
            f"{figures['load_rows_per_s']:,.0f} rows/s\n"
            f"  end to end: {figures['end_to_end_rows_per_s']:,.0f} rows/s",
            flush=True,
        )
    if args.windows:
        figures = bytes_per_window(args.windows, args.window_seconds, args.rate)
        for k, (ts, cap) in enumerate(figures["per_window"]):
            print(
                f"  window {k}: timestamp {ts['bytes']:,} bytes, {ts['rows']:,} rows; "
                f"capture {cap['bytes']:,} bytes, {cap['rows']:,} rows"
            )
        print(f"bytes per window: {bytes_line(figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
