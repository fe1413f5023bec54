"""The receiver's Dagster layer driven in process: resources, an inbox fed through the
local-folder transport, sensor ticks that run what they request, and failure messages."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from arb_pipeline.extract.build import BuiltBackup, publish
from arb_pipeline.receiver.assets import load_complete, load_partial
from arb_pipeline.receiver.definitions import defs as receiver_defs
from arb_pipeline.receiver.resources import ReceiverDatabase, ReceiverSettings
from arb_pipeline.receiver.sensors import inbox_sensor
from arb_pipeline.transport.local import LocalFolderTransport


def receiver_resources(dsn, inbox, media, quarantine, **settings) -> dict:
    """The receiver's resources; no disk floor unless ``min_free_mb`` is given."""
    return {
        "receiver_db": ReceiverDatabase(dsn=dsn),
        "receiver_settings": ReceiverSettings(
            inbox_dir=str(inbox),
            media_dir=str(media),
            quarantine_dir=str(quarantine),
            **{"min_free_mb": 0, **settings},
        ),
    }


@dataclass
class Receiver:
    dsn: str
    inbox: Path
    media: Path
    quarantine: Path

    @classmethod
    def under(cls, dsn: str, root: Path) -> Receiver:
        """A receiver whose folders are under ``root``: its inbox and media folder exist, its
        quarantine is made when first used."""
        rx = cls(dsn, root / "inbox", root / "receiver-media", root / "quarantine")
        rx.inbox.mkdir()
        rx.media.mkdir()
        return rx

    def resources(self, **settings) -> dict:
        return receiver_resources(self.dsn, self.inbox, self.media, self.quarantine, **settings)

    def deliver(self, built: BuiltBackup) -> Path:
        """Publish every file of the backup into the inbox, manifest last, as the sender does."""
        publish(LocalFolderTransport(self.inbox), BuiltBackup(built.staged, built.manifest))
        return self.folder(built)

    def folder(self, built: BuiltBackup) -> Path:
        return self.inbox / built.manifest.kind / built.manifest.backup_id

    def quarantined(self, built: BuiltBackup) -> Path:
        return self.quarantine / built.manifest.kind / built.manifest.backup_id


def tick(instance, resources, cursor=None, *, execute=True):
    """One sensor evaluation, then (like the daemon) every run it requested, in process."""
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=receiver_defs
    )
    result = inbox_sensor(context)
    return result, run_requested(instance, resources, result.run_requests if execute else None)


def run_requested(instance, resources, requests) -> list:
    """Each requested load run, in process as the daemon would launch it: (request, result)."""
    outcomes = []
    for request in requests or []:
        assets = load_partial if request.job_name == "load_partial_job" else load_complete
        res = dg.materialize(
            [assets],
            partition_key=request.partition_key,
            run_config=request.run_config,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        outcomes.append((request, res))
    return outcomes


def evaluate(instance, resources, cursor=None, *, now=None):
    """One tick through Dagster's own evaluation (``evaluate_tick``: it resolves each request's
    partition and fails the tick on a key it doesn't know, as the daemon does), then every run
    it requested. ``now`` is the receiver's clock for partitions (Dagster's public
    ``partition_loading_context``): the partitions that exist, for the sensor and the runs alike.
    Returns Dagster's tick data and the (request, result) of each run."""
    with dg.partition_loading_context(effective_dt=now) if now else contextlib.nullcontext():
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=resources, definitions=receiver_defs
        )
        data = inbox_sensor.evaluate_tick(context)
        outcomes = run_requested(instance, resources, data.run_requests)
    return data, outcomes


def load_run(instance, resources, built: BuiltBackup):
    """A load run for one backup, as from the UI with its backup_id."""
    kind = built.manifest.kind
    assets, op = (load_partial, "load_partial") if kind == "partial" else (load_complete, "load_complete")
    return dg.materialize(
        [assets],
        partition_key=built.manifest.partition_key,
        instance=instance,
        resources=resources,
        raise_on_error=False,
        run_config={"ops": {op: {"config": {"backup_ids": [built.manifest.backup_id]}}}},
    )


def failure_text(result) -> str:
    """Every message of the failed step's error chain."""
    parts = []
    for event in result.get_step_failure_events():
        err = event.step_failure_data.error
        stack = [err]
        while stack:
            e = stack.pop()
            if e is None:
                continue
            parts.append(e.message)
            stack += [e.cause, e.context]
        if event.step_failure_data.user_failure_data:
            parts.append(event.step_failure_data.user_failure_data.description or "")
    return "\n".join(parts)
