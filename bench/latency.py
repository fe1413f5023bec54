"""Commit-to-receiver latency under the real daemon: how long a row committed on the sender
takes to be visible on the receiver, and where that time goes. Never used by tests.

    .venv/bin/python -m bench.latency --minutes 10 --partial-minutes 1 [--sftp]

Runs `arb demo` (dagster dev: the webserver, the daemon and a code server per location; the
app's generated traffic on the sender) in a temporary folder. Once the first complete has
loaded it polls both databases every second for new rows of the tables partials carry, for
``--minutes``; a row's latency is when the receiver first shows it minus when the sender
first did (both to about a second). Then it reads the runs from the webserver's GraphQL API
and prints, per partial window, where the time went: the schedule's delay after the window
closed, the backup run (dump, package, publish), the sensor noticing the backup, the load
run's start, and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc
TABLES = ("AndroidRequests_eventforbusv2", "AndroidRequests_eventforbusstop", "AndroidRequests_report")
PG_LINE = re.compile(r"PostgreSQL pid \d+ on 127\.0\.0\.1:(\d+)")
UI_LINE = re.compile(r"Dagster UI: (http://127\.0\.0\.1:\d+)")
RUNS = """
{ runsOrError(limit: 5000) { ... on Runs { results {
  jobName status creationTime startTime endTime tags { key value } } } } }
"""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start_demo(folder: Path, port: int, partial_minutes: int, sftp: bool):
    arb = Path(sys.executable).parent / "arb"
    args = [
        str(arb),
        "demo",
        "--dir",
        str(folder),
        "--port",
        str(port),
        "--partial-minutes",
        str(partial_minutes),
    ]
    proc = subprocess.Popen(
        args + (["--sftp"] if sftp else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"},
    )
    pg_port = url = None
    deadline = time.monotonic() + 300
    while url is None:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            raise SystemExit(f"arb demo did not come up ({proc.poll()})")
        print(line.rstrip(), flush=True)
        pg_port = pg_port or (m.group(1) if (m := PG_LINE.search(line)) else None)
        url = m.group(1) if (m := UI_LINE.search(line)) else None
    # Keep reading what it prints, so a full pipe never blocks it.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, int(pg_port), url


def _new_ids(conn, last: dict[str, int]) -> list[tuple[str, int]]:
    seen = []
    for table in TABLES:
        for (row_id,) in conn.execute(
            f'SELECT id FROM "{table}" WHERE id > %s ORDER BY id', (last.get(table, 0),)
        ).fetchall():
            seen.append((table, row_id))
            last[table] = row_id
    return seen


def _runs(url: str) -> list[dict]:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": RUNS}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)["data"]["runsOrError"]["results"]


def _where_the_time_goes(runs: list[dict], partial_minutes: int, since: datetime) -> dict[str, list[float]]:
    """Seconds per step for each partial window that closed after ``since`` and loaded."""
    by_key: dict[str, dict[str, dict]] = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        key = tags.get("dagster/partition")
        if (
            run["jobName"] in ("partial_backup_job", "load_partial_job")
            and key
            and run["status"] == "SUCCESS"
        ):
            by_key.setdefault(key, {}).setdefault(run["jobName"], run)
    steps: dict[str, list[float]] = {
        k: [] for k in ("schedule delay", "backup run", "sensor notices", "load run start", "load")
    }
    for key, pair in by_key.items():
        backup, load = pair.get("partial_backup_job"), pair.get("load_partial_job")
        closed = datetime.strptime(key, "%Y-%m-%d-%H-%M").replace(tzinfo=UTC) + timedelta(
            minutes=partial_minutes
        )
        if not backup or not load or closed < since:
            continue
        steps["schedule delay"].append(backup["creationTime"] - closed.timestamp())
        steps["backup run"].append(backup["endTime"] - backup["creationTime"])
        steps["sensor notices"].append(load["creationTime"] - backup["endTime"])
        steps["load run start"].append(load["startTime"] - load["creationTime"])
        steps["load"].append(load["endTime"] - load["startTime"])
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="how long rows are followed")
    parser.add_argument("--partial-minutes", type=int, default=1, help="ARB_PARTIAL_MINUTES")
    parser.add_argument("--sftp", action="store_true", help="publish over SFTP to a local sshd (root)")
    parser.add_argument("--port", type=int, default=0, help="Dagster UI port (default: a free one)")
    args = parser.parse_args(argv)

    from arb_pipeline.dev.ports import free_port
    from arb_pipeline.pg.connect import connect

    folder = Path(tempfile.mkdtemp(prefix="arb-latency-"))
    proc, pg_port, url = _start_demo(folder, args.port or free_port(), args.partial_minutes, args.sftp)
    try:
        dsn = f"host=127.0.0.1 port={pg_port} user=postgres dbname=%s"
        with connect(dsn % "sender", autocommit=True) as tx, connect(dsn % "receiver", autocommit=True) as rx:
            while not rx.execute("SELECT 1 FROM arb_loaded_backup WHERE kind = 'complete'").fetchone():
                if proc.poll() is not None:
                    raise SystemExit("arb demo stopped before the first complete loaded")
                time.sleep(2)
            tx_last: dict[str, int] = {}
            _new_ids(tx, tx_last)  # what exists now is not followed
            rx_last = dict(tx_last)
            since = datetime.now(UTC)
            committed: dict[tuple[str, int], float] = {}
            visible: dict[tuple[str, int], float] = {}
            follow_until = time.monotonic() + args.minutes * 60
            drain_until = follow_until + (2 * args.partial_minutes + 3) * 60
            print(f"following new rows for {args.minutes:g} minutes ...", flush=True)
            while time.monotonic() < drain_until and (
                time.monotonic() < follow_until or committed.keys() - visible.keys()
            ):
                now = time.time()
                if time.monotonic() < follow_until:
                    for row in _new_ids(tx, tx_last):
                        committed[row] = now
                for row in _new_ids(rx, rx_last):
                    visible.setdefault(row, now)
                time.sleep(max(0.0, 1 - (time.time() - now)))
        latencies = [visible[r] - committed[r] for r in committed if r in visible]
        steps = _where_the_time_goes(_runs(url), args.partial_minutes, since)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n== commit-to-receiver latency, ARB_PARTIAL_MINUTES={args.partial_minutes} ==")
    if not latencies:
        print("no row committed while following reached the receiver")
        return 1
    target = args.partial_minutes * 60 + 60
    p95 = _quantile(latencies, 0.95)
    print(
        f"- {len(latencies):,} rows over {args.minutes:g} minutes "
        f"({len(committed) - len(latencies)} not seen on the receiver): "
        f"p50 {statistics.median(latencies):.0f} s, p95 {p95:.0f} s, max {max(latencies):.0f} s "
        f"(target p95 <= {target} s: one partial length + 60 s)"
    )
    for name, values in steps.items():
        if values:
            print(
                f"- {name}: median {statistics.median(values):.1f} s, max {max(values):.1f} s "
                f"({len(values)} windows)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
