"""A day's catch-up through Dagster: a receiver that was down for a day finds 288 partials
and a complete in its inbox; how long until the real daemon and inbox sensor have loaded
them all, in order. Never used by tests.

    .venv/bin/python -m bench.catchup [--partials 288] [--rows-per-window 200]

Starts its own PostgreSQL cluster in a temporary folder, fills a sender with the app's
events over the last ``--partials`` 5-minute windows, builds yesterday's complete first
and then the partials (the complete comes first in snapshot order, as the one taken just
after midnight does, and the partials carry the day's rows), publishes them into an inbox,
and only then starts `dagster dev` with the receiver's code location alone (the webserver,
the daemon, a code server). It prints the time from start to the last backup in the
ledger, from the first load to the last, and the load runs the webserver reports.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.latency import _runs

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[1]
WORKSPACE = """load_from:
  - python_module:
      module_name: arb_pipeline.receiver.definitions
      location_name: receiver
"""


def _backlog(pg, base: Path, partials: int, rows_per_window: int) -> datetime:
    """Publish yesterday's complete and ``partials`` partials into base/inbox; return the
    first partial window's start."""
    from arb_pipeline.dev.generator.reference import seed_reference
    from arb_pipeline.dev.generator.scale import build_event_window
    from arb_pipeline.dev.postgres import find_bin_dir
    from arb_pipeline.extract.build import build_complete, build_partial, publish
    from arb_pipeline.extract.tables import Window
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.settings.setting import PARTITION_FORMATS
    from arb_pipeline.transport import LocalFolderTransport

    partial_fmt, complete_fmt = PARTITION_FORMATS

    now = datetime.now(UTC)
    last_closed = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    first = last_closed - timedelta(minutes=5 * partials)
    with connect(pg.dsn("sender")) as conn:
        seed_reference(conn, seed=1, scale=0.1)
        conn.commit()
    transport = LocalFolderTransport(base / "inbox")
    staging = base / "staging"
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    publish(
        transport,
        build_complete(
            pg.dsn("sender"),
            staging,
            partition_key=yesterday.strftime(complete_fmt),
            window=Window(yesterday, today),
            unique="bench",
            media_dir=base / "sender-media",
            sender_id="bench",
            pg_dump=str(find_bin_dir() / "pg_dump"),
        ),
    )
    with connect(pg.dsn("sender")) as conn:  # the day's app traffic, after the complete
        build_event_window(conn, first, rows=max(4, rows_per_window * partials), minutes=5 * partials)
        conn.commit()
    for i in range(partials):
        window = Window(first + timedelta(minutes=5 * i), first + timedelta(minutes=5 * (i + 1)))
        built = build_partial(
            pg.dsn("sender"),
            staging,
            partition_key=window.start.strftime(partial_fmt),
            window=window,
            unique=f"{i:06d}",
            media_dir=base / "sender-media",
            sender_id="bench",
        )
        publish(transport, built)
    return first


def _ledger(dsn: str) -> tuple[int, datetime | None, datetime | None]:
    from arb_pipeline.pg.connect import connect

    with connect(dsn) as conn:
        if not conn.execute("SELECT to_regclass('arb_loaded_backup') IS NOT NULL").fetchone()[0]:
            return 0, None, None
        return conn.execute(
            "SELECT count(*), min(loaded_at), max(loaded_at) FROM arb_loaded_backup"
        ).fetchone()


def _peak_rss(group: int, peaks: dict[str, int]) -> None:
    """Each process of ``group`` (dagster dev and all it started): its peak RSS so far
    (VmHWM), the largest per kind of process."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getpgid(int(status.parent.name)) != group:
                continue
            argv = (status.parent / "cmdline").read_bytes().split(b"\0")
            hwm = next(
                int(line.split()[1]) * 1024
                for line in status.read_text().splitlines()
                if line.startswith("VmHWM:")
            )
        except (OSError, StopIteration, ValueError):
            continue  # gone meanwhile, or a kernel thread
        kind = " ".join(Path(a.decode()).name for a in argv[:4] if a and not a.startswith(b"-"))
        peaks[kind] = max(peaks.get(kind, 0), hwm)


def _ui_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2):
            return True
    except OSError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partials", type=int, default=288, help="5-minute windows waiting (288: a day)")
    parser.add_argument("--rows-per-window", type=int, default=200, help="app rows per window")
    parser.add_argument("--timeout-minutes", type=float, default=30)
    args = parser.parse_args(argv)

    from arb_pipeline.dev.demo import demo_environment
    from arb_pipeline.dev.ports import free_port
    from arb_pipeline.dev.postgres import LocalPostgres
    from arb_pipeline.schema.migrate import apply_migrations

    base = Path(tempfile.mkdtemp(prefix="arb-bench-catchup-"))
    for sub in ("inbox", "staging", "sender-media", "receiver-media", "quarantine"):
        (base / sub).mkdir()
    pg = LocalPostgres(base / "postgres").start()
    dev = None
    try:
        for role in ("sender", "receiver"):
            apply_migrations(pg.create_database(role), role)
        t = time.perf_counter()
        first = _backlog(pg, base, args.partials, args.rows_per_window)
        print(
            f"backlog built and published: {args.partials} partials and a complete "
            f"({time.perf_counter() - t:.0f} s)"
        )
        port = free_port()
        go_live = (first - timedelta(days=1)).replace(hour=0, minute=0)
        env = demo_environment(base, pg, go_live, port, partial_minutes=5)
        (base / "workspace.yaml").write_text(WORKSPACE)
        url = f"http://127.0.0.1:{port}"
        dagster = str(Path(sys.executable).parent / "dagster")
        start = time.perf_counter()
        started_at = datetime.now(UTC)
        dev = subprocess.Popen(
            [dagster, "dev", "-w", str(base / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=open(base / "dagster-dev.log", "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        expected = args.partials + 1
        ui_seconds, peaks = None, {}
        deadline = start + args.timeout_minutes * 60
        while True:
            if dev.poll() is not None:
                raise SystemExit(f"dagster dev exited ({dev.returncode}); see {base / 'dagster-dev.log'}")
            if ui_seconds is None and _ui_up(url):
                ui_seconds = time.perf_counter() - start
            _peak_rss(dev.pid, peaks)
            count, first_load, last_load = _ledger(pg.dsn("receiver"))
            if count >= expected:
                break
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"only {count} of {expected} backups loaded after {args.timeout_minutes} min"
                )
            time.sleep(1)
        total = time.perf_counter() - start
        while True:  # the runs end after their last load: checks, retention, events
            runs = [r for r in _runs(url) if r["jobName"] in ("load_partial_job", "load_complete_job")]
            _peak_rss(dev.pid, peaks)
            if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
                break
            time.sleep(1)
        print(
            f"- {expected} backups loaded through the daemon and the inbox sensor in {total:.0f} s from start"
        )
        to_first = (first_load - started_at).total_seconds()
        print(
            f"  (UI up after {ui_seconds or 0:.0f} s; first load committed {to_first:.0f} s after start, "
            f"the last {(last_load - first_load).total_seconds():.0f} s after the first)"
        )
        top = sorted(peaks.items(), key=lambda kv: -kv[1])[:5]  # run workers are multiprocessing spawns
        print("- largest peak RSS: " + ", ".join(f"{k[:48]} {v / 2**20:.0f} MB" for k, v in top))
        print(f"- {len(runs)} load runs:")
        for r in sorted(runs, key=lambda r: r["creationTime"]):
            tags = {t["key"]: t["value"] for t in r["tags"]}
            span = tags.get("dagster/partition") or (
                f"{tags.get('dagster/asset_partition_range_start')}...{tags.get('dagster/asset_partition_range_end')}"
            )
            queued = (r["startTime"] or r["creationTime"]) - r["creationTime"]
            ran = (r["endTime"] or r["startTime"] or 0) - (r["startTime"] or 0)
            print(f"  {r['jobName']:18} {span:35} {r['status']:8} queued {queued:5.1f} s, ran {ran:6.1f} s")
        return 0
    finally:
        if dev is not None and dev.poll() is None:
            os.killpg(dev.pid, signal.SIGTERM)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
