"""The one-machine demo: a sender database with live app traffic, a receiver database,
both code locations under ``dagster dev``, backups moving through a local inbox folder.

Everything lives under ``var/demo`` and binds to 127.0.0.1; Ctrl-C (or SIGTERM) stops
what it started (dagster dev and its process group, the traffic, SMTP, sshd with
``--sftp``, PostgreSQL), by PID. Every 30 s it prints a parity summary (demo_parity.py).
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

from arb_pipeline.capture.chain import CAPTURE
from arb_pipeline.dev.demo_capture import QuietParity, TrafficGate, setup_capture
from arb_pipeline.dev.demo_parity import loaded_parity
from arb_pipeline.dev.ports import free_port
from arb_pipeline.dev.postgres import LocalPostgres, find_bin_dir
from arb_pipeline.dev.smtp import LocalSmtp
from arb_pipeline.dev.sshd import LocalSshd, ServiceError, sshd_unavailable_reason
from arb_pipeline.errors import ConfigError
from arb_pipeline.pg.connect import connect
from arb_pipeline.proc import process_alive
from arb_pipeline.schema.migrate import apply_migrations

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / "var" / "demo"
DEMO_MARK = ".arb-demo"  # marks a folder the demo made, so a fresh start may empty it


def _log(msg: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {msg}", flush=True)


def demo_environment(
    base: Path, pg: LocalPostgres, go_live: datetime, port: int, partial_minutes: int = 1
) -> dict[str, str]:
    """The ARB_* settings both code locations read (docs/settings.md)."""
    home = base / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "ARB_SENDER_DSN": pg.dsn("sender"),
            "ARB_RECEIVER_DSN": pg.dsn("receiver"),
            "ARB_GO_LIVE": go_live.strftime("%Y-%m-%d-%H-%M"),
            "ARB_PARTIAL_MINUTES": str(partial_minutes),
            "ARB_PARTIAL_DELAY_MINUTES": "0",
            "ARB_TRANSPORT": "local",
            "ARB_INBOX_DIR": str(base / "inbox"),
            "ARB_STAGING_DIR": str(base / "staging"),
            "ARB_SENDER_MEDIA_DIR": str(base / "sender-media"),
            "ARB_RECEIVER_MEDIA_DIR": str(base / "receiver-media"),
            "ARB_QUARANTINE_DIR": str(base / "quarantine"),
            "ARB_PG_DUMP": str(find_bin_dir() / "pg_dump"),
            "ARB_UI_BASE_URL": f"http://127.0.0.1:{port}",
        }
    )
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


# In timestamp mode, bulk updates that leave timeStamp alone (the app's "mark declined events
# broken" cron) reach the receiver only with the next daily complete (docs/guarantees.md,
# promise 1); the demo leaves them out there so its parity summary shows what partials promise.
# Capture mode (the default) ships them: the generator's full traffic.
TIMESTAMP_TRAFFIC_WEIGHTS = {"mark_declined_broken": 0}
SUMMARY_EVERY_S = 30


def _traffic(dsn: str, media: Path, stop: threading.Event, rate: float, gate: TrafficGate | None) -> None:
    from arb_pipeline.dev.generator.workload import DEFAULT_WEIGHTS, Workload

    weights = DEFAULT_WEIGHTS if gate is not None else {**DEFAULT_WEIGHTS, **TIMESTAMP_TRAFFIC_WEIGHTS}
    try:
        with Workload(dsn, media, seed=int(time.time()), weights=weights) as work:
            while not stop.is_set():
                if gate is None:
                    work.step()
                else:
                    with gate.step(stop):
                        if not stop.is_set():
                            work.step()
                stop.wait(1 / rate)
    except Exception as exc:  # e.g. PostgreSQL stopping under it: say so once, don't dump a trace
        if not stop.is_set():
            _log(f"app traffic stopped: {exc}")


def summary(pg: LocalPostgres) -> str:
    """Loaded backups and parity of the partial tables up to the newest loaded window."""
    try:
        return loaded_parity(pg.dsn("sender"), pg.dsn("receiver")).format()
    except Exception as exc:  # the summary must never stop the demo
        return f"parity unavailable ({exc})"


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # run the same cleanup as Ctrl-C


def sftp_environment(sshd: LocalSshd) -> dict[str, str]:
    """The sender publishes over SFTP to a local sshd whose inbox the receiver reads."""
    return {
        "ARB_TRANSPORT": "sftp",
        "ARB_SFTP_HOST": sshd.host,
        "ARB_SFTP_PORT": str(sshd.port),
        "ARB_SFTP_USER": sshd.username,
        "ARB_SFTP_KEY_FILE": str(sshd.client_key_path),
        "ARB_SFTP_KNOWN_HOSTS": str(sshd.known_hosts_path),
        "ARB_SFTP_REMOTE_DIR": sshd.remote_inbox,
        "ARB_INBOX_DIR": str(sshd.inbox_dir),
    }


def run(
    port: int = 3000,
    rate: float = 2.0,
    keep: bool = False,
    sftp: bool = False,
    partial_minutes: int = 1,
    base: Path | None = None,
    partial_source: str = "capture",
) -> int:
    # Started as a background job of a script, we inherit SIGINT ignored; dagster dev maps
    # SIGTERM to whatever SIGINT does, so it would ignore our SIGTERM too. A Python handler
    # (reset to the default across exec) makes Ctrl-C and SIGTERM work for both.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    reason = sftp and sshd_unavailable_reason()
    if reason:  # before anything starts
        raise ServiceError(
            f"arb demo --sftp needs a local OpenSSH sshd: {reason}; or run the demo without --sftp "
            "(the local-folder transport)"
        )
    base = Path(base or REPO / "var" / "demo").absolute()
    if base.exists() and not keep:
        if any(base.iterdir()) and not (base / DEMO_MARK).exists():  # never someone else's folder
            raise ConfigError(
                f"{base} is not empty and not a demo's folder: give --dir a new or empty folder"
            )
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    (base / DEMO_MARK).touch()
    for sub in ("inbox", "staging", "sender-media", "receiver-media", "quarantine"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    pg = sshd = mail = dev = seed = traffic = None
    stop = threading.Event()
    try:
        _log(f"starting PostgreSQL ({find_bin_dir()}) under {base}")
        # wal_level=logical: the sender's changes are captured (one cluster holds both databases)
        pg = LocalPostgres(base / "postgres", settings={"wal_level": "logical"}).start()
        for role in ("sender", "receiver"):
            apply_migrations(pg.create_database(role), role)
        from arb_pipeline.dev.generator.reference import seed_reference
        from arb_pipeline.ops.zoning import bundled_zoning, import_zoning

        # The receiver's own reference data: the real zoning, as an admin loads it.
        zoning = import_zoning(pg.dsn("receiver"), bundled_zoning())
        _log(f"receiver zoning: {zoning.zones} zones of EOD 2012 (arb zones import)")

        with connect(pg.dsn("sender")) as conn:
            seed_reference(conn, seed=1, scale=0.1)
        gate = quiet = None
        if partial_source == CAPTURE:  # before any traffic or complete: the slot captures from here
            for step in setup_capture(pg.dsn("sender")):
                _log(f"arb capture setup: {step}")
            gate = TrafficGate()
            quiet = QuietParity(pg.dsn("sender"), pg.dsn("receiver"), gate)
        traffic = threading.Thread(
            target=_traffic, args=(pg.dsn("sender"), base / "sender-media", stop, rate, gate), daemon=True
        )
        traffic.start()
        _log(f"sender database seeded; app traffic at {rate:g} operations/s, partials by {partial_source}")
        # Go-live is now: partials start with the demo, and the completes the day before
        # (partitions.py), so yesterday's complete exists to seed the receiver.
        go_live = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        port = port if _port_free(port) else free_port()
        env = demo_environment(base, pg, go_live, port, partial_minutes)
        env["ARB_PARTIAL_SOURCE"] = partial_source
        if sftp:
            sshd = LocalSshd(base / "sshd").start()
            env.update(sftp_environment(sshd))
            _log(f"transport: SFTP to sshd pid {sshd.pid} on {sshd.host}:{sshd.port}, inbox {sshd.inbox_dir}")
        else:
            _log(f"transport: local folder {env['ARB_INBOX_DIR']}")
        mail = LocalSmtp(eml_dir=base / "mail").start()  # alert emails land in var/demo/mail/*.eml
        env.update(operations_environment(pg, mail))
        log = open(base / "dagster-dev.log", "ab")
        dagster = str(Path(sys.executable).parent / "dagster")
        # Popen (not a shell `&`), in its own session: dagster dev and every process it
        # starts (webserver, daemon, code servers, runs) share one process group we stop.
        dev = subprocess.Popen(
            [dagster, "dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _log(
            f"started: PostgreSQL pid {pg.pid} on 127.0.0.1:{pg.port}, SMTP on {mail.host}:{mail.port}, "
            f"dagster dev pid {dev.pid}" + (f", sshd pid {sshd.pid}" if sshd else "")
        )
        _wait_for_ui(port, dev)
        _log(
            f"Dagster UI: http://127.0.0.1:{port}  (log: {base / 'dagster-dev.log'}); Ctrl-C stops everything"
        )
        # The first complete seeds the receiver, as on a new deployment; partials follow every minute.
        seed = subprocess.Popen(
            [
                dagster,
                "asset",
                "materialize",
                "-m",
                "arb_pipeline.sender.definitions",
                "--select",
                "group:sender_complete",
                "--partition",
                (go_live - timedelta(days=1)).strftime("%Y-%m-%d"),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        seed_reported = False
        while dev.poll() is None:
            time.sleep(SUMMARY_EVERY_S)
            if seed.poll() not in (None, 0) and not seed_reported:
                _log(
                    f"the first complete backup failed ({seed.returncode}); see the UI and "
                    f"{base / 'dagster-dev.log'}"
                )
                seed_reported = True
            _log(quiet.summary() if quiet else summary(pg))
        _log(f"dagster dev exited with {dev.returncode}; see {base / 'dagster-dev.log'}")
        return 1
    except KeyboardInterrupt:
        _log("stopping")
        return 0
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        for proc in (seed, dev):
            if proc is not None:
                _stop_process_group(proc)
        if traffic is not None:
            traffic.join(10)
        if mail is not None:
            mail.stop()
        if sshd is not None:
            sshd.cleanup()
        if pg is not None:
            pg.stop()
        _log("stopped")


def _stop_process_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process (it stops its children its own way), then whatever is left of its
    group (runs still finishing), and SIGKILL what doesn't exit within ``timeout``."""
    pgid = proc.pid  # start_new_session: the leader's PID is the group's ID
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
        if not process_alive(pgid, group=True):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        while process_alive(pgid, group=True) and time.monotonic() < deadline:
            time.sleep(0.2)
    proc.poll()


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
