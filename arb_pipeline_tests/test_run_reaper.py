"""The dead-run reaper on its own (the fault matrix kills real runs: scenarios 1, 6, 7, 8)."""

from __future__ import annotations

import threading

import dagster as dg

from arb_pipeline.dagster_common import run_reaper
from arb_pipeline.dagster_common.run_reaper import reap_dead_runs


def _started_run(instance):
    """A run that is STARTED and stays so until released: (thread, release event)."""
    started, release = threading.Event(), threading.Event()

    @dg.asset
    def slow(context):
        for i in range(40):  # plain log lines carry no pid: the reaper must look past them
            context.log.info(f"working {i}")
        started.set()
        release.wait(30)

    thread = threading.Thread(target=lambda: dg.materialize([slow], instance=instance, raise_on_error=False))
    thread.start()
    assert started.wait(30)
    return thread, release


def test_a_run_whose_process_lives_is_left_alone_and_a_dead_one_is_failed(monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    thread, release = _started_run(instance)
    try:
        assert reap_dead_runs(instance, min_silence_seconds=0) == []  # our own pid: alive
        monkeypatch.setattr(run_reaper, "_pid_alive", lambda pid: False)
        assert reap_dead_runs(instance, min_silence_seconds=3600) == []  # not silent long enough
        assert reap_dead_runs(instance, belongs=lambda run: False, min_silence_seconds=0) == []
        [reaped] = reap_dead_runs(instance, min_silence_seconds=0)
        run = instance.get_run_by_id(reaped.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert reap_dead_runs(instance, min_silence_seconds=0) == []  # once
    finally:
        release.set()
        thread.join(30)


def test_a_recycled_pid_running_something_else_counts_as_dead():
    import subprocess

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert run_reaper._pid_alive(sleeper.pid) is False  # alive, but not a Python/dagster worker
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run_reaper._pid_alive(sleeper.pid) is False  # gone
    import os

    assert run_reaper._pid_alive(os.getpid()) is True
