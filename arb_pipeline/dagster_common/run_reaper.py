"""Runs whose process died (SIGKILL, OOM killer, a reboot) are marked failed, and their
pool slots given back.

Why: a run whose process dies while no Dagster process watches it (a `dagster asset
materialize` run; runs whose code server died with them; a reboot) stays STARTED
forever, and so do the pool slot it claimed (``sender_partial``, ``receiver_db``) and its
place under the ``arb/db-load`` run limit. Every later backup or load of that pool then
waits, silently. (A run the daemon launched is watched by its code server, which reports
it failed itself; the default launcher has no health check for the rest.) Run
monitoring's ``max_runtime`` would end it only after the longest legitimate run (hours,
for a complete). The fault matrix found this (scenario 1).

How: every event Dagster writes carries the pid of the process that wrote it. A STARTED
run is dead when the newest such pid is not a live process of this host and the run has
been silent for ``min_silence_seconds``. Launchers that check their workers themselves
(Docker, Kubernetes) are left to Dagster. The run is reported failed with the reason,
which the failure alert sensor emails, and its concurrency slots are freed; the daemon's
run retries launch it again (dagster.yaml), and the next schedule tick or sensor request
proceeds (the sender's overlap re-reads a killed window, the inbox sensor re-requests a
killed load).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from arb_pipeline.proc import command_line, process_alive
from arb_pipeline.settings import DEAD_RUN_SILENCE_SECONDS


@dataclass(frozen=True)
class ReapedRun:
    run_id: str
    job_name: str
    pid: int
    silent_seconds: float


def _pid_alive(pid: int) -> bool:
    """A live process that is a Python/dagster worker (a recycled pid running something else is dead)."""
    if not process_alive(pid):
        return False
    cmdline = command_line(pid)
    return cmdline is None or b"python" in cmdline or b"dagster" in cmdline


def _last_pid_and_time(instance: dg.DagsterInstance, run_id: str) -> tuple[int | None, float | None]:
    """The pid of the newest event that names one, and the time of the newest event; only
    the last few events are read (a long complete has thousands)."""
    records = instance.get_records_for_run(run_id, limit=20, ascending=False).records
    last = records[0].event_log_entry.timestamp if records else None
    # Plain log lines carry no pid; step and engine events always do.
    marked = instance.get_records_for_run(
        run_id,
        limit=1,
        ascending=False,
        of_type={
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.ENGINE_EVENT,
            dg.DagsterEventType.RUN_START,
        },
    ).records
    for record in [*records, *marked]:
        event = record.event_log_entry.dagster_event
        if event is not None and event.pid:
            return event.pid, last
    return None, last


def reap_dead_runs(
    instance: dg.DagsterInstance,
    *,
    belongs: Callable[[dg.DagsterRun], bool] = lambda run: True,
    min_silence_seconds: float = DEAD_RUN_SILENCE_SECONDS.default_value,
    now: float | None = None,
) -> list[ReapedRun]:
    """Mark this host's dead STARTED runs failed and free their pool slots; return them."""
    if instance.run_launcher.supports_check_run_worker_health:
        return []  # the launcher's own health check (run monitoring) handles it
    now = time.time() if now is None else now
    reaped = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        if not belongs(run):
            continue
        pid, last = _last_pid_and_time(instance, run.run_id)
        if pid is None or last is None or now - last < min_silence_seconds or _pid_alive(pid):
            continue
        message = (
            f"The run's process (pid {pid}) is gone without finishing: it was killed or the machine "
            f"restarted. Marked failed after {now - last:.0f} s of silence; its pool slots are freed "
            "and the next scheduled run or sensor request takes over."
        )
        instance.report_run_failed(run, message)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(ReapedRun(run.run_id, run.job_name, pid, now - last))
    return reaped


def make_dead_run_sensor(
    location: str,
    belongs_factory: Callable[[dg.SensorEvaluationContext], Callable[[dg.DagsterRun], bool]],
    *,
    minimum_interval_seconds: int = 60,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{location}_dead_runs",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Marks failed the {location} runs whose process died (SIGKILL, OOM, reboot) "
        "and frees their pool slots, so later backups and loads don't wait on them",
    )
    def _dead_runs(context: dg.SensorEvaluationContext):
        min_silence = DEAD_RUN_SILENCE_SECONDS.read()
        reaped = reap_dead_runs(
            context.instance, belongs=belongs_factory(context), min_silence_seconds=min_silence
        )
        if not reaped:
            return dg.SkipReason("no dead runs")
        for r in reaped:
            context.log.warning(f"run {r.run_id} ({r.job_name}): process {r.pid} gone; marked failed")
        return dg.SkipReason(
            f"marked {len(reaped)} dead run(s) failed: {', '.join(r.run_id for r in reaped)}"
        )

    return _dead_runs
