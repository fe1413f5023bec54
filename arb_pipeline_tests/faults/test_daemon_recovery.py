"""Scenario 1, the way production meets it: a run launched through the daemon's run queue
and the default launcher is SIGKILLed mid-extraction. With nobody touching anything, the
code server that started it reports it failed (it watches the processes it launches),
its pool slot is given back, and the real `dagster-daemon` launches it again
(`run_retries` in dagster.yaml, crashes only), which publishes that window's backup; the
receiver loads it and parity holds. (Scenario 1 kills a `dagster asset materialize` run,
which no Dagster process watches: there the dead-run sensor is what ends it.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import dagster as dg

from arb_pipeline.pg.connect import connect
from arb_pipeline_tests.faults.harness import wait_for, waiting_on_lock
from arb_pipeline_tests.support.dagster_cli import DAGSTER

REPORT = '"AndroidRequests_report"'


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, as the run's own events record it."""
    for entry in reversed(instance.all_logs(run_id)):
        if entry.dagster_event is not None and entry.dagster_event.pid:
            return entry.dagster_event.pid
    return None


def _runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs())


def test_1b_the_daemon_fails_and_retries_a_killed_run_by_itself(pipeline):
    p = pipeline
    k1, _, _ = p.begin()
    p.traffic(k1, 60)
    workspace = p.root / "workspace.yaml"
    workspace.write_text("load_from:\n  - python_module: arb_pipeline.sender.definitions\n")
    env = dict(p.env("sender"), ARB_DEAD_RUN_SILENCE_SECONDS="0")
    instance = p.instance("sender")
    log = (p.root / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(DAGSTER) + "-daemon", "run", "-w", str(workspace)],
        env=env,
        cwd=p.root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with connect(p.sender_dsn) as lock:  # the extraction waits on this lock: that's where it dies
            lock.execute(f"LOCK TABLE {REPORT} IN ACCESS EXCLUSIVE MODE")
            subprocess.run(
                [
                    DAGSTER,
                    "job",
                    "launch",
                    "-w",
                    str(workspace),
                    "-j",
                    "partial_backup_job",
                    "--tags",
                    json.dumps({"dagster/partition": k1}),
                ],
                env=env,
                cwd=p.root,
                check=True,
                capture_output=True,
                timeout=120,
            )
            wait_for(lambda: waiting_on_lock(p.sender_dsn), 180, "the queued run to reach the locked table")
            [run] = [r for r in _runs(instance) if r.tags.get("dagster/partition") == k1]
            pid = wait_for(lambda: _worker_pid(instance, run.run_id), 30, "the run worker's pid")
            os.kill(pid, signal.SIGKILL)
        # Nothing by hand from here: the code server fails the run, the daemon retries it.
        retried = wait_for(
            lambda: [
                r
                for r in _runs(instance)
                if r.parent_run_id == run.run_id and r.status == dg.DagsterRunStatus.SUCCESS
            ],
            240,
            "the daemon to retry the killed run",
            interval=1,
        )
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert retried[0].tags.get("dagster/partition") == k1
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        log.close()
    assert any(f.name.startswith(f"partial-{k1}-") for f in p.published()), "the retry published k1's backup"
    assert len(p.receive_ok()) >= 1
    p.assert_parity()
