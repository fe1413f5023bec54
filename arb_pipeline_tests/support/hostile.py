"""A loaded receiver and genuine backups to tamper with, for the hostile-sender tests: each
tampered copy gets a new backup id (no ledger row matches it) and a re-signed manifest, and
``refused`` checks it is quarantined with its reason while the receiver stays as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from psycopg import sql

from arb_pipeline.catalog import current_catalog
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.verify import VerifyError
from arb_pipeline.pg.connect import connect
from arb_pipeline.receive.inbox import receive
from arb_pipeline_tests.support.backups import complete_for_yesterday, new_sender, partial_for, window_of
from arb_pipeline_tests.support.postgres import fresh_db
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

REPLICATED = sorted(current_catalog().table_names)


@dataclass
class Rx:
    dsn: str
    inbox: Path
    media: Path
    quarantine: Path
    partial: Path  # genuine, never loaded by the fixture
    complete: Path  # genuine, loaded
    sender_dsn: str
    sender_staging: Path
    sender_media: Path

    def receive(self, folder: Path, **kwargs):
        return receive(folder, dsn=self.dsn, media_dir=self.media, quarantine_dir=self.quarantine, **kwargs)


def loaded_receiver(pg_cluster, root: Path, seed: int) -> Rx:
    """A sender, a receiver loaded with its complete, and a genuine partial taken after it."""
    dsn, media, staging = new_sender(pg_cluster, root, seed=seed)
    key = PARTIAL.get_partition_key_for_timestamp(
        (datetime.now(timezone.utc) - timedelta(minutes=40)).timestamp()
    )
    complete = complete_for_yesterday(dsn, staging, media).staged.root  # older: the partial applies
    traffic_at(dsn, media, seed, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 120)
    partial = partial_for(dsn, staging, media, key, "hp1").staged.root
    r = Rx(
        fresh_db(pg_cluster, "receiver"),
        root / "inbox",
        root / "rx-media",
        root / "quarantine",
        partial,
        complete,
        dsn,
        staging,
        media,
    )
    r.media.mkdir()
    r.receive(copy_in(r, complete, complete.name))
    return r


def copy_in(rx: Rx, src: Path, backup_id: str) -> Path:
    """``src`` delivered to the receiver's inbox as ``backup_id``."""
    dest = rx.inbox / backup_id.split("-", 1)[0] / backup_id
    shutil.copytree(src, dest)
    return dest


def tampered(rx: Rx, src: Path, unique: str) -> tuple[Path, dict]:
    """A copy of ``src`` under a new backup id (so no ledger row matches it), and its manifest."""
    doc = json.loads((src / MANIFEST_NAME).read_bytes())
    backup_id = doc["backup_id"].rsplit("-", 1)[0] + "-" + unique
    folder = copy_in(rx, src, backup_id)
    doc["backup_id"] = backup_id
    return folder, doc


def table_entry(doc: dict, *, min_rows: int = 0, table: str | None = None) -> dict:
    return next(
        f
        for f in doc["files"]
        if f["kind"] == "table" and f["rows"] >= min_rows and (table is None or f["table"] == table)
    )


def resign(folder: Path, doc: dict, entry: dict, content: bytes, rows: int | None = None) -> None:
    """Put ``content`` in the entry's file and make the manifest agree with it."""
    (folder / entry["name"]).write_bytes(content)
    entry.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    if rows is not None:
        entry["rows"] = rows
        if "fingerprint" in entry:
            entry["fingerprint"]["rows"] = rows
    write_manifest(folder, doc)


def write_manifest(folder: Path, doc: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def state(rx: Rx) -> dict:
    """What a refused backup must not change: row counts, the ledger, the media folder."""
    with connect(rx.dsn) as conn:
        counts = {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            for t in REPLICATED
        }
        ledger = conn.execute("SELECT backup_id, outcome FROM arb_loaded_backup ORDER BY 1").fetchall()
    media = sorted(p.relative_to(rx.media).as_posix() for p in rx.media.rglob("*"))
    return {"tables": counts, "ledger": ledger, "media": media}


def refused(rx: Rx, folder: Path, *reason: str) -> str:
    """Receive ``folder``: it must be refused and quarantined, naming ``reason``; nothing changes."""
    before = state(rx)
    with pytest.raises(VerifyError) as raised:
        rx.receive(folder)
    message = str(raised.value)
    for part in reason:
        assert part in message, message
    assert not folder.exists()
    moved = rx.quarantine / folder.parent.name / folder.name
    assert moved.is_dir() and reason[0] in (moved / "REASON.txt").read_text()
    assert state(rx) == before
    return message
