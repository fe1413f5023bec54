"""The one-machine demo: a sender database with live app traffic, a receiver database,
both code locations under ``dagster dev``, backups moving through a local inbox folder.

Everything lives under ``var/demo`` and binds to 127.0.0.1; Ctrl-C stops what it
started (dagster dev, the traffic, PostgreSQL), by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from arb_pipeline.db import connect
from arb_pipeline.devenv.ports import free_port
from arb_pipeline.devenv.postgres import LocalPostgres, find_bin_dir
from arb_pipeline.devenv.smtp import LocalSmtp
from arb_pipeline.migrate import apply_migrations

REPO = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {msg}", flush=True)


def demo_environment(base: Path, pg: LocalPostgres, go_live: datetime, port: int) -> dict[str, str]:
    """The ARB_* settings both code locations read (README, "Settings")."""
    home = base / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env.update({
        "DAGSTER_HOME": str(home),
        "ARB_SENDER_DSN": pg.dsn("sender"),
        "ARB_RECEIVER_DSN": pg.dsn("receiver"),
        "ARB_GO_LIVE": go_live.strftime("%Y-%m-%d-%H-%M"),
        "ARB_PARTIAL_MINUTES": "1",
        "ARB_PARTIAL_DELAY_MINUTES": "0",
        "ARB_TRANSPORT": "local",
        "ARB_INBOX_DIR": str(base / "inbox"),
        "ARB_STAGING_DIR": str(base / "staging"),
        "ARB_SENDER_MEDIA_DIR": str(base / "sender-media"),
        "ARB_RECEIVER_MEDIA_DIR": str(base / "receiver-media"),
        "ARB_QUARANTINE_DIR": str(base / "quarantine"),
        "ARB_PG_DUMP": str(find_bin_dir() / "pg_dump"),
        "ARB_UI_BASE_URL": f"http://127.0.0.1:{port}",
    })
    return env


def operations_environment(pg: LocalPostgres, mail: LocalSmtp) -> dict[str, str]:
    """Alerts to a local capturing SMTP server (no login, like a local relay) and a restore
    drill role that may create databases and nothing more."""
    with connect(pg.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'arb_drill'").fetchone():
            conn.execute("CREATE ROLE arb_drill LOGIN CREATEDB")
    return {
        "ARB_ADMINS": "admins@localhost",
        "ARB_SMTP_HOST": mail.host,
        "ARB_SMTP_PORT": str(mail.port),
        "ARB_SMTP_SECURITY": "none",
        "ARB_MAIL_FROM": "arb-demo@localhost",
        "ARB_ALERT_INTERVAL_MINUTES": "10",
        "ARB_DRILL_DSN": f"host=127.0.0.1 port={pg.port} user=arb_drill dbname=postgres",
        "ARB_PSQL": str(find_bin_dir() / "psql"),
    }


def _traffic(dsn: str, media: Path, stop: threading.Event, rate: float) -> None:
    from arb_pipeline.generator.workload import Workload

    with Workload(dsn, media, seed=int(time.time())) as work:
        while not stop.is_set():
            work.step()
            stop.wait(1 / rate)


PARTIAL_TABLES = ["AndroidRequests_" + t for t in ("eventforbusstop", "eventforbusv2", "report",
                                                   "stadisticdatafromregistrationbusstop",
                                                   "stadisticdatafromregistrationbus")]


def summary(pg: LocalPostgres) -> str:
    """Loaded backups and parity of the tables partials carry (telemetry tables catch up
    with each day's complete, so they drift in between, by design)."""
    try:
        from arb_pipeline.parity import compare_tables

        with connect(pg.dsn("receiver")) as conn:
            loaded = dict(conn.execute("SELECT kind, count(*) FROM arb_loaded_backup GROUP BY kind").fetchall())
        report = compare_tables(pg.dsn("sender"), pg.dsn("receiver"), tables=PARTIAL_TABLES)
        rows = sum(t.sender.rows for t in report.tables)
        state = "OK" if report.ok else "catching up: " + ", ".join(
            f"{t.table.removeprefix('AndroidRequests_')} {t.receiver.rows}/{t.sender.rows}" for t in report.tables if not t.ok)
        return (f"loaded {loaded.get('partial', 0)} partial and {loaded.get('complete', 0)} complete backups; "
                f"parity of the partial tables ({rows} rows): {state}")
    except Exception as exc:  # the summary must never stop the demo
        return f"parity unavailable ({exc})"


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # run the same cleanup as Ctrl-C


def run(port: int = 3000, rate: float = 2.0, keep: bool = False) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    base = REPO / "var" / "demo"
    if base.exists() and not keep:
        shutil.rmtree(base)
    for sub in ("inbox", "staging", "sender-media", "receiver-media", "quarantine"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    _log(f"starting PostgreSQL ({find_bin_dir()}) under {base}")
    pg = LocalPostgres(base / "postgres").start()
    dev = mail = None
    stop = threading.Event()
    traffic = None
    try:
        for role in ("sender", "receiver"):
            apply_migrations(pg.create_database(role), role)
        from arb_pipeline.generator.reference import seed_reference
        from arb_pipeline.generator.zones import seed_zones

        with connect(pg.dsn("receiver")) as conn:  # the receiver's own reference data: zones for postprocessing
            seed_zones(conn)

        with connect(pg.dsn("sender")) as conn:
            seed_reference(conn, seed=1, scale=0.1)
        traffic = threading.Thread(target=_traffic, args=(pg.dsn("sender"), base / "sender-media", stop, rate),
                                   daemon=True)
        traffic.start()
        _log(f"sender database seeded; app traffic at {rate:g} operations/s")
        # Partitions start yesterday, so yesterday's complete exists to seed the receiver.
        go_live = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
        env = demo_environment(base, pg, go_live, port)
        port = port if _port_free(port) else free_port()
        env["ARB_UI_BASE_URL"] = f"http://127.0.0.1:{port}"
        mail = LocalSmtp(eml_dir=base / "mail").start()  # alert emails land in var/demo/mail/*.eml
        env.update(operations_environment(pg, mail))
        log = open(base / "dagster-dev.log", "ab")
        # Popen (not a shell `&`): dagster dev then honours SIGTERM/SIGINT.
        dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"),
                                "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
        _wait_for_ui(port, dev)
        _log(f"Dagster UI: http://127.0.0.1:{port}  (log: {base / 'dagster-dev.log'}); Ctrl-C stops everything")
        # The first complete seeds the receiver, as on a new deployment; partials follow every minute.
        seed = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                                 "arb_pipeline.sender.definitions", "--select", "group:sender_complete",
                                 "--partition", go_live.strftime("%Y-%m-%d")], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        while dev.poll() is None:
            time.sleep(30)
            if seed.poll() not in (None, 0):
                _log(f"the first complete backup failed ({seed.returncode}); see the UI and {base / 'dagster-dev.log'}")
                seed.returncode = 0
            _log(summary(pg))
        _log(f"dagster dev exited with {dev.returncode}; see {base / 'dagster-dev.log'}")
        return 1
    except KeyboardInterrupt:
        _log("stopping")
        return 0
    finally:
        stop.set()
        if dev is not None and dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
        if traffic is not None:
            traffic.join(10)
        if mail is not None:
            mail.stop()
        pg.stop()
        _log("stopped")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_for_ui(port: int, dev: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {dev.returncode} before the UI came up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Dagster UI did not answer on port {port} within {timeout:.0f} s")
