"""The real pipeline, end to end, for the fault matrix.

One ``Pipeline`` per scenario: a seeded sender database with generator traffic, the
sender code location run by the real `dagster asset materialize` CLI (so a run can be
SIGKILLed) or in process, SFTP to the session's real sshd through a ``FaultProxy``, and
the receiver's inbox sensor and load assets on their own Dagster instance.

Time: the app writes into 5-minute partitions that closed an hour or more ago (the
generator's clock offset), so every window is closed when its backup runs and a scenario
can run a window's backup whenever it likes, as a schedule tick or a backfill would.

The scenario's promise is checked by ``assert_parity``: every replicated table and the
media folder equal on both sides (counts and order-independent digests, keys named on
drift). ``start()`` loads a baseline complete first, and traffic after it uses only the
operations partials carry (votes, reports), so parity after partials is full parity: a
lost or duplicated row in a partial shows, it isn't healed by a later complete.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg

from arb_pipeline.dagster_common.partitions import COMPLETE, PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.generator.workload import Workload
from arb_pipeline.dev.postgres import LocalPostgres, find_bin_dir
from arb_pipeline.dev.sshd import LocalSshd
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver.assets import load_complete, load_partial
from arb_pipeline.receiver.definitions import defs as receiver_defs
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings
from arb_pipeline.receiver.sensors import inbox_sensor
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher, SenderDatabase, SenderSettings
from arb_pipeline_tests.faults.proxy import FaultProxy
from arb_pipeline_tests.support.dagster_cli import materialize_command
from arb_pipeline_tests.support.postprocess import assert_every_row_derived
from arb_pipeline_tests.support.services import sftp_destination
from arb_pipeline_tests.support.traffic import BASELINE_OPS, PARTIAL_OPS

REPO = Path(__file__).resolve().parents[2]


def window_start(key: str) -> datetime:
    return PARTIAL.time_window_for_partition_key(key).start


def next_key(key: str, n: int = 1) -> str:
    start = window_start(key) + timedelta(minutes=5 * n)
    return PARTIAL.get_partition_key_for_timestamp(start.timestamp())


@dataclass
class CliRun:
    """A `dagster asset materialize` process in its own session (killable as a group)."""

    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run did not finish in {timeout} s:\n{self.output()[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def assert_ok(self, timeout: float = 180) -> None:
        assert self.wait(timeout) == 0, self.output()[-4000:]


@dataclass
class Pipeline:
    pg: LocalPostgres
    sshd: LocalSshd
    root: Path
    sender_dsn: str
    receiver_dsn: str
    proxy: FaultProxy | None = None
    io_timeout: int = 30
    retry_after_seconds: int = 0
    min_free_mb: int = 0
    receiver_media: Path | None = None
    _cursor: str | None = None
    _pp_cursor: str | None = None
    _runs: int = 0
    _seed: int = 0
    _instances: dict = field(default_factory=dict)

    # -- folders and settings -----------------------------------------------------------
    @property
    def sender_media(self) -> Path:
        return self.root / "sender-media"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def inbox(self) -> Path:
        return Path(self.sshd.inbox_dir)

    def setup(self, seed: int) -> "Pipeline":
        self._seed = seed
        self.receiver_media = self.receiver_media or self.root / "receiver-media"
        for d in (self.sender_media, self.staging, self.receiver_media):
            d.mkdir(parents=True, exist_ok=True)
        self.proxy = FaultProxy(self.sshd.port)
        # The sender reaches sshd through the proxy: trust the same host key under its port.
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.proxy.port} {self.sshd.host_key_line}\n")
        with connect(self.sender_dsn) as conn:
            seed_reference(conn, seed=seed, scale=0.02)
        return self

    def instance(self, side: str) -> dg.DagsterInstance:
        if side not in self._instances:
            home = self.root / f"dagster-{side}"
            home.mkdir(exist_ok=True)
            shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
            self._instances[side] = dg.DagsterInstance.from_config(str(home))
        return self._instances[side]

    def close(self) -> None:
        for inst in self._instances.values():
            inst.dispose()
        if self.proxy:
            self.proxy.close()

    def destination(self, retries: int = 4) -> BackupDestination:
        return sftp_destination(
            self.sshd,
            host="127.0.0.1",
            port=self.proxy.port,
            known_hosts_file=str(self.known_hosts),
            retries=retries,
            io_timeout=self.io_timeout,
        )

    def sender_resources(self) -> dict:
        dest = self.destination()
        return {
            "sender_db": SenderDatabase(dsn=self.sender_dsn),
            "sender_settings": SenderSettings(
                media_dir=str(self.sender_media),
                staging_dir=str(self.staging),
                sender_id="faults",
                pg_dump=str(find_bin_dir() / "pg_dump"),
            ),
            "backup_destination": dest,
            "backup_publisher": BackupPublisher(destination=dest),
        }

    def receiver_resources(self) -> dict:
        return {
            "receiver_db": ReceiverDatabase(dsn=self.receiver_dsn),
            "receiver_settings": ReceiverSettings(
                inbox_dir=str(self.inbox),
                media_dir=str(self.receiver_media),
                quarantine_dir=str(self.quarantine),
                min_free_mb=self.min_free_mb,
                retry_after_seconds=self.retry_after_seconds,
            ),
        }

    def env(self, side: str) -> dict[str, str]:
        """The ARB_* settings of one side, for the `dagster` CLI (docs/settings.md)."""
        env = dict(
            os.environ, DAGSTER_HOME=str(self.instance(side).root_directory), ARB_ADMINS="admins@localhost"
        )
        if side == "sender":
            env.update(
                ARB_SENDER_DSN=self.sender_dsn,
                ARB_TRANSPORT="sftp",
                ARB_SFTP_HOST="127.0.0.1",
                ARB_SFTP_PORT=str(self.proxy.port),
                ARB_SFTP_USER=self.sshd.username,
                ARB_SFTP_KEY_FILE=str(self.sshd.client_key_path),
                ARB_SFTP_KNOWN_HOSTS=str(self.known_hosts),
                ARB_SFTP_REMOTE_DIR=self.sshd.remote_inbox,
                ARB_SFTP_IO_TIMEOUT=str(self.io_timeout),
                ARB_SENDER_MEDIA_DIR=str(self.sender_media),
                ARB_STAGING_DIR=str(self.staging),
                ARB_SENDER_ID="faults",
                ARB_PG_DUMP=str(find_bin_dir() / "pg_dump"),
            )
        else:
            env.update(
                ARB_RECEIVER_DSN=self.receiver_dsn,
                ARB_INBOX_DIR=str(self.inbox),
                ARB_RECEIVER_MEDIA_DIR=str(self.receiver_media),
                ARB_QUARANTINE_DIR=str(self.quarantine),
                ARB_MIN_FREE_MB=str(self.min_free_mb),
            )
        return env

    # -- the app -------------------------------------------------------------------------
    def traffic(self, key: str, steps: int = 60, *, ops: dict | None = None, at_second: int = 30) -> None:
        """App requests whose timestamps fall in partition ``key`` (a closed window)."""
        self._seed += 1
        offset = window_start(key) + timedelta(seconds=at_second) - datetime.now(UTC)
        with Workload(
            self.sender_dsn,
            self.sender_media,
            seed=self._seed,
            clock_offset=offset,
            weights=ops or PARTIAL_OPS,
        ) as work:
            for _ in range(steps):
                work.step()

    def workload(self, key: str, *, at_second: int = 30) -> Workload:
        self._seed += 1
        offset = window_start(key) + timedelta(seconds=at_second) - datetime.now(UTC)
        return Workload(
            self.sender_dsn, self.sender_media, seed=self._seed, clock_offset=offset, weights=PARTIAL_OPS
        )

    # -- the sender ----------------------------------------------------------------------
    def send(self, key: str, kind: str = "partial") -> dg.ExecuteInProcessResult:
        """One sender run in process (a schedule tick or a backfill of that partition)."""
        assets = partial_backup if kind == "partial" else complete_backup
        result = dg.materialize(
            [assets],
            partition_key=key,
            resources=self.sender_resources(),
            instance=self.instance("sender"),
            raise_on_error=False,
        )
        assert result.success, _failure(result)
        return result

    def send_cli(self, key: str, kind: str = "partial") -> CliRun:
        """The same run through the real CLI, in its own process group (killable)."""
        return self._cli("sender", f"sender_{kind}", key)

    def receive_cli(self, key: str, kind: str = "partial") -> CliRun:
        """A receiver run of partition ``key`` through the CLI: a load of that window's
        backups (kind partial or complete) or its postprocessing (kind postprocess)."""
        return self._cli("receiver", f"receiver_{kind}", key)

    def _cli(self, side: str, group: str, key: str) -> CliRun:
        self._runs += 1
        log = self.root / f"{side}-run-{self._runs}.log"
        cmd = materialize_command(side, group, key)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                env=self.env(side),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        return CliRun(proc, log)

    def reap(self, side: str) -> list[str]:
        """One tick of the location's dead-run sensor (as the daemon runs it): the ids it failed."""
        from arb_pipeline.sender.definitions import defs as sender_defs

        defs = sender_defs if side == "sender" else receiver_defs
        sensor = defs.get_sensor_def(f"{side}_dead_runs")
        before = {
            r.run_id
            for r in self.instance(side).get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        }
        old = os.environ.get("ARB_DEAD_RUN_SILENCE_SECONDS")
        os.environ["ARB_DEAD_RUN_SILENCE_SECONDS"] = "0"
        try:
            sensor(dg.build_sensor_context(instance=self.instance(side), definitions=defs))
        finally:
            if old is None:
                del os.environ["ARB_DEAD_RUN_SILENCE_SECONDS"]
            else:
                os.environ["ARB_DEAD_RUN_SILENCE_SECONDS"] = old
        return sorted(
            {
                r.run_id
                for r in self.instance(side).get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            }
            - before
        )

    # -- the receiver ---------------------------------------------------------------------
    def receive(self, max_ticks: int = 20) -> list[tuple[dg.RunRequest, dg.ExecuteInProcessResult]]:
        """Sensor ticks, each followed by the runs it requested (as the daemon does), until quiet."""
        done = []
        for _ in range(max_ticks):
            context = dg.build_sensor_context(
                instance=self.instance("receiver"),
                cursor=self._cursor,
                resources=self.receiver_resources(),
                definitions=receiver_defs,
            )
            result = inbox_sensor(context)
            self._cursor = result.cursor or self._cursor
            if not result.run_requests:
                return done
            for request in result.run_requests:
                assets = load_partial if request.job_name == "load_partial_job" else load_complete
                res = dg.materialize(
                    [assets],
                    partition_key=request.partition_key,
                    run_config=request.run_config,
                    instance=self.instance("receiver"),
                    resources=self.receiver_resources(),
                    raise_on_error=False,
                    tags={**request.tags, "dagster/run_key": request.run_key},
                )
                done.append((request, res))
        raise AssertionError(f"the inbox sensor kept requesting runs after {max_ticks} ticks")

    def receive_ok(self) -> list[str]:
        """Receive until quiet; every run must succeed. Returns the loaded backup ids."""
        done = self.receive()
        failed = [(r.run_key, _failure(res)) for r, res in done if not res.success]
        assert not failed, failed
        return [b for r, _ in done for op in r.run_config["ops"].values() for b in op["config"]["backup_ids"]]

    def begin(self, minutes_ago: int = 120) -> tuple[str, str, str]:
        """``start`` in the window ``minutes_ago``; returns the scenario's next three window keys."""
        base = first_key(minutes_ago)
        self.start(base)
        return next_key(base, 2), next_key(base, 3), next_key(base, 4)

    def start(self, baseline_key: str) -> None:
        """Baseline: traffic of every kind, a complete, loaded; then the scenario begins."""
        self.traffic(baseline_key, 120, ops=BASELINE_OPS)
        self.send(complete_day(), "complete")
        assert len(self.receive_ok()) == 1
        self.assert_parity()

    def postprocess(self) -> list[dg.ExecuteInProcessResult]:
        """A postprocess_sensor tick and the run it requests (after loads that applied a backup)."""
        from arb_pipeline.receiver.postprocess_assets import (
            POSTPROCESS_ASSETS,
            postprocess_sensor,
            postprocess_settings_from_environment,
        )

        context = dg.build_sensor_context(
            instance=self.instance("receiver"), cursor=self._pp_cursor, definitions=receiver_defs
        )
        result = postprocess_sensor(context)
        self._pp_cursor = result.cursor or self._pp_cursor
        runs = []
        for request in result.run_requests or []:
            res = dg.materialize(
                POSTPROCESS_ASSETS,
                partition_key=request.partition_key,
                run_config=request.run_config,
                instance=self.instance("receiver"),
                resources={
                    "receiver_db": ReceiverDatabase(dsn=self.receiver_dsn),
                    "postprocess_settings": postprocess_settings_from_environment(),
                },
                raise_on_error=False,
                tags=request.tags,
            )
            assert res.success, _failure(res)
            runs.append(res)
        return runs

    def assert_postprocessed(self) -> None:
        """Every source row has its derived rows, computed from its current version."""
        assert_every_row_derived(self.receiver_dsn)

    def next_window_recovers(self, key: str, *, cli: bool = False, steps: int = 40) -> None:
        """The system's own recovery from a lost window: the next window's run (its overlap
        re-reads the lost one) is loaded, and full parity holds. ``cli``: run it through the
        dagster CLI, which waits for the pool slot a killed run would still hold."""
        self.traffic(key, steps)
        if cli:
            self.send_cli(key).assert_ok()
        else:
            self.send(key)
        assert len(self.receive_ok()) == 1
        self.assert_parity()

    def ledger(self) -> dict[str, str]:
        with connect(self.receiver_dsn) as conn:
            return dict(conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup").fetchall())

    def assert_parity(self, tables=None) -> None:
        report = compare_tables(self.sender_dsn, self.receiver_dsn, tables=tables)
        assert report.ok, report.format()
        media = compare_media(self.sender_media, self.receiver_media)
        assert media.ok, media.format()

    def published(self, kind: str = "partial") -> list[Path]:
        folder = self.inbox / kind
        return (
            sorted(p for p in folder.iterdir() if (p / "manifest.json").exists()) if folder.exists() else []
        )


def complete_day() -> str:
    return COMPLETE.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(days=1)).timestamp())


def first_key(minutes_ago: int = 120) -> str:
    return PARTIAL.get_partition_key_for_timestamp(
        (datetime.now(UTC) - timedelta(minutes=minutes_ago)).timestamp()
    )


def _failure(result) -> str:
    parts = []
    for event in result.get_step_failure_events():
        err = event.step_failure_data.error
        while err is not None:
            parts.append(err.message.strip())
            err = err.cause
    return "\n".join(parts) or "(no step failure)"


def wait_for(predicate, timeout: float = 60, what: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def waiting_on_lock(dsn: str) -> bool:
    """True when some session of that database waits for a lock (our held LOCK TABLE)."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with connect(dsn) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                (dbname,),
            ).fetchone()[0]
        )


def temp_uploads(inbox: Path) -> list[Path]:
    """Files still under their hidden upload name."""
    return [p for p in inbox.rglob(".*") if p.is_file()] if inbox.exists() else []
