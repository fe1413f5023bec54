"""Point-in-time restore (arb_pipeline/pitr.py, `arb restore`) on a real generated sender.

The module's sender timeline (each window's traffic stops before its partial is built,
and nothing is written between a window's end and the copy taken for it):

    complete C_old | traffic (every operation) | partial "early" (older than C) | complete C
    W0 (holds C's snapshot): P0 | W1 votes/reports -> P1, copy "at W1.end" | W2 ... -> P2, copy
    "at W2.end" | W3 ... -> P3

Windows W0..W3 are 5-minute partitions on the real clock, starting with the one that
holds C's snapshot: a restore chooses completes by their snapshot (the database clock)
and partials by their windows (the rows' timestamps), so both must be on one time line.
W1..W3 lie in the near future; the app's clock is shifted into them (``clock_offset``),
as a 5-minute-fast app server would write. After C, only votes and reports run: the
rows partials carry (support/traffic.py's PARTIAL_OPS), so the state at a window end is
exactly what C and the partials up to it hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import zstandard

from arb_pipeline.cli.main import main
from arb_pipeline.dev.generator.workload import DEFAULT_WEIGHTS
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.extract.build import BuiltBackup, build_complete, build_partial, publish
from arb_pipeline.extract.tables import Window
from arb_pipeline.ops.media_parity import compare_media
from arb_pipeline.ops.parity import compare_tables
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.package.reader import read_manifest
from arb_pipeline.progress import Progress
from arb_pipeline.restore.pitr import RestoreError, check_restored, parse_time, plan_restore, restore
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.backups import new_sender
from arb_pipeline_tests.support.postgres import copy_db, fresh_db
from arb_pipeline_tests.support.traffic import PARTIAL_OPS, traffic_at

UTC = timezone.utc
P = "AndroidRequests_"
MINUTES = 5
_names = itertools.count()


@dataclass
class World:
    sender: str
    c_old: BuiltBackup
    early: BuiltBackup
    complete: BuiltBackup
    partials: list[BuiltBackup]  # P0..P3
    windows: list[Window]  # W0..W3
    copies: dict[datetime, tuple[str, Path]]  # window end -> (sender copy DSN, media folder copy)
    inbox: Path


def _floor(t: datetime) -> datetime:
    return t.replace(minute=t.minute - t.minute % MINUTES, second=0, microsecond=0)


def _partial(dsn, staging, media, window: Window, unique: str) -> BuiltBackup:
    return build_partial(
        dsn,
        staging,
        partition_key=window.start.strftime("%Y-%m-%d-%H-%M"),
        window=window,
        unique=unique,
        media_dir=media,
        sender_id="pitr",
    )


def _complete(dsn, staging, media, unique: str) -> BuiltBackup:
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return build_complete(
        dsn,
        staging,
        partition_key=day.strftime("%Y-%m-%d"),
        window=Window(day, day + timedelta(days=1)),
        unique=unique,
        media_dir=media,
        sender_id="pitr",
        pg_dump=str(find_bin_dir() / "pg_dump"),
        fingerprints=True,  # the restore checks the sender's own digests where a complete carries them
    )


@pytest.fixture(scope="module")
def world(pg_cluster, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("pitr")
    dsn, media, staging = new_sender(pg_cluster, root, seed=23)
    c_old = _complete(dsn, staging, media, "cold")
    before = datetime.now(UTC) - timedelta(minutes=40)
    traffic_at(dsn, media, 23, before, DEFAULT_WEIGHTS, 150)
    early = _partial(
        dsn, staging, media, Window(_floor(before), _floor(before) + timedelta(minutes=MINUTES)), "early"
    )
    complete = _complete(dsn, staging, media, "c")
    w0 = _floor(complete.manifest.snapshot_time)
    windows = [
        Window(w0 + timedelta(minutes=MINUTES * i), w0 + timedelta(minutes=MINUTES * (i + 1)))
        for i in range(4)
    ]
    partials = [_partial(dsn, staging, media, windows[0], "p0")]
    copies = {}
    for i, seed in ((1, 24), (2, 25), (3, 26)):
        traffic_at(dsn, media, seed, windows[i].start + timedelta(seconds=60), PARTIAL_OPS, 60)
        partials.append(_partial(dsn, staging, media, windows[i], f"p{i}"))
        if i < 3:
            media_copy = root / f"media_at_w{i}"
            shutil.copytree(media, media_copy)
            copies[windows[i].end] = (copy_db(pg_cluster, dsn, "pitr_at"), media_copy)
    inbox = root / "inbox"
    for built in (c_old, early, complete, *partials):
        publish(LocalFolderTransport(inbox), BuiltBackup(built.staged, built.manifest))
    # The scenarios need: the states at W1.end and W2.end differ, images in the partials.
    assert not compare_tables(copies[windows[1].end][0], copies[windows[2].end][0]).ok
    assert any(p.manifest.media for p in partials[1:3])
    assert early.manifest.snapshot_time < complete.manifest.snapshot_time < partials[0].manifest.snapshot_time
    return World(dsn, c_old, early, complete, partials, windows, copies, inbox)


def _new_target(pg) -> tuple[str, str]:
    """(target DSN of a database that does not exist yet, maintenance DSN)."""
    return pg.dsn(f"pitr_target_{os.getpid()}_{next(_names)}"), pg.dsn()


def _exists(pg, dsn: str) -> bool:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _relations(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                "c.relnamespace WHERE n.nspname = 'public' ORDER BY 1"
            )
        ]


def _ids(backups) -> list[str]:
    return [b.manifest.backup_id for b in backups]


# -- the state at T ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "window, extra",
    [(1, timedelta(0)), (2, timedelta(0)), (2, timedelta(minutes=2))],
    ids=["at-W1-end", "at-W2-end", "inside-W3"],
)
def test_restore_equals_the_sender_copied_at_t(world, pg_cluster, tmp_path, window, extra):
    at = world.windows[window].end + extra
    snapshot, media_then = world.copies[world.windows[window].end]
    target, maintenance = _new_target(pg_cluster)
    result = restore(world.inbox, at, target, create_from=maintenance, media_dir=tmp_path / "media")

    assert result.plan.complete.backup_id == world.complete.manifest.backup_id  # not C_old
    assert [c.backup_id for c in result.plan.partials] == _ids(
        world.partials[: window + 1]
    )  # not early, not later
    assert result.plan.covered_to == world.windows[window].end
    assert bool(result.plan.warnings) == bool(extra)  # inside W3: "as of W2.end"
    assert result.ok, result.format()
    assert all(t.sender_digest_ok for t in result.parity), result.format()
    report = compare_tables(snapshot, target)
    assert report.ok, report.format()
    assert report.table(P + "eventforbusv2").sender.rows > 0 and report.table(P + "report").sender.rows > 0
    media = compare_media(media_then, tmp_path / "media")
    assert media.ok, media.format()

    if window == 1:  # the parity check can fail: a changed restored row is named
        with psycopg.connect(target, autocommit=True) as conn:
            key = conn.execute(
                f"UPDATE \"{P}report\" SET message = message || '!' WHERE id = "
                f'(SELECT min(id) FROM "{P}report") RETURNING id'
            ).fetchone()[0]
        drift = {t.table: t for t in check_restored(target, result.plan)}
        assert [t for t, r in drift.items() if not r.ok] == [P + "report"]
        assert drift[P + "report"].first_keys == [f"id={key} changed in the restore"]


def test_latest_takes_every_partial_newer_than_the_newest_complete(world):
    plan = plan_restore(world.inbox, None)
    assert plan.complete.backup_id == world.complete.manifest.backup_id
    assert [c.backup_id for c in plan.partials] == _ids(world.partials)
    assert plan.covered_to == world.windows[3].end and not plan.warnings


def test_parse_time_reads_utc_iso():
    assert parse_time("2026-11-25T10:05:00Z") == datetime(2026, 11, 25, 10, 5, tzinfo=UTC)
    assert parse_time("2026-11-25 07:05-03:00") == datetime(2026, 11, 25, 10, 5, tzinfo=UTC)
    assert parse_time("2026-11-25T10:05") == datetime(2026, 11, 25, 10, 5, tzinfo=UTC)
    with pytest.raises(RestoreError, match="not an ISO 8601 time"):
        parse_time("yesterday")


# -- refusals ---------------------------------------------------------------------------------


def test_a_time_before_the_first_complete_is_a_clear_error(world, pg_cluster):
    target, maintenance = _new_target(pg_cluster)
    oldest = world.c_old.manifest
    with pytest.raises(RestoreError, match=f"before the oldest complete backup .*{oldest.backup_id}"):
        restore(world.inbox, oldest.snapshot_time - timedelta(seconds=1), target, create_from=maintenance)
    assert not _exists(pg_cluster, target)


def test_a_missing_partial_is_a_gap_named_or_with_allow_gaps_a_warning(world, tmp_path):
    inbox = tmp_path / "inbox"
    shutil.copytree(world.inbox, inbox)
    shutil.rmtree(inbox / "partial" / world.partials[1].manifest.backup_id)
    w1, at = world.windows[1], world.windows[2].end
    gap = f"{w1.start:%Y-%m-%dT%H:%M:%S}Z .. {w1.end:%Y-%m-%dT%H:%M:%S}Z"
    with pytest.raises(RestoreError, match=f"no partial backup .* covers {gap}"):
        plan_restore(inbox, at)
    plan = plan_restore(inbox, at, allow_gaps=True)
    assert any(gap in w for w in plan.warnings)
    assert plan_restore(inbox, w1.start).covered_to == w1.start  # up to the gap is fine
    later = world.windows[3].end + timedelta(hours=1)  # past everything backed up
    with pytest.raises(RestoreError, match=f"covers {world.windows[3].end:%Y-%m-%dT%H:%M:%S}Z .. "):
        plan_restore(world.inbox, later)


def test_a_non_empty_target_is_refused_and_nothing_is_written(world, pg_cluster):
    target = fresh_db(pg_cluster, "sender")  # migrated: tables, no rows
    before = _relations(target)
    with pytest.raises(RestoreError, match="is not empty .*nothing was written"):
        restore(world.inbox, world.windows[2].end, target)
    assert _relations(target) == before and "arb_loaded_backup" not in before
    with psycopg.connect(target) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{P}busstop"').fetchone()[0] == 0
    _, maintenance = _new_target(pg_cluster)
    with pytest.raises(RestoreError, match="exists already"):
        restore(world.inbox, world.windows[2].end, target, create_from=maintenance)


def test_a_tampered_backup_on_the_path_stops_before_anything_is_written(world, pg_cluster, tmp_path):
    inbox = tmp_path / "inbox"
    shutil.copytree(world.inbox, inbox)
    p1 = world.partials[1].manifest
    entry = next(f for f in p1.files if f.table == P + "eventforbusv2")
    path = inbox / "partial" / p1.backup_id / entry.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    target, maintenance = _new_target(pg_cluster)
    with pytest.raises(
        RestoreError,
        match=f"backup {p1.backup_id} on the restore path failed verification: "
        f"backup {p1.backup_id}: file {entry.name}: sha256 differs",
    ):
        restore(inbox, world.windows[2].end, target, create_from=maintenance)
    assert not _exists(pg_cluster, target)
    with psycopg.connect(maintenance, autocommit=True) as conn:  # an existing empty target stays empty
        conn.execute(
            f'CREATE DATABASE "{psycopg.conninfo.conninfo_to_dict(target)["dbname"]}" TEMPLATE template0'
        )
    with pytest.raises(RestoreError, match="failed verification"):
        restore(inbox, world.windows[2].end, target)
    assert _relations(target) == []
    # Before P1's window, the tampered backup is not on the path: the restore works.
    assert restore(inbox, world.windows[0].end, target).ok


# -- the command line -------------------------------------------------------------------------


def test_arb_restore_end_to_end_with_exit_codes(world, pg_cluster, tmp_path, capsys, monkeypatch):
    at = f"{world.windows[2].end:%Y-%m-%dT%H:%M:%S}Z"
    target, maintenance = _new_target(pg_cluster)
    args = ["restore", "--inbox", str(world.inbox), "--at", at, "--dsn", target]
    assert main(args + ["--dry-run"]) == 0
    assert "verification OK" in capsys.readouterr().out and not _exists(pg_cluster, target)

    monkeypatch.setenv("ARB_PROGRESS", "1")
    assert main(args + ["--create-from", maintenance]) == 0
    out, err = capsys.readouterr()
    assert "parity ok" in out and f"{P}report: ok" in out and "DRIFT" not in out
    assert f"load [{'#' * 24}] 4/4" in err  # the progress bar, forced: C + P0..P2
    assert compare_tables(world.copies[world.windows[2].end][0], target).ok
    # `arb parity` with its bar (table by table) reports what it reports without it.
    parity = ["parity", "--sender-dsn", world.copies[world.windows[2].end][0], "--receiver-dsn", target]
    assert main(parity) == 0
    with_bar, bar = capsys.readouterr()
    monkeypatch.setenv("ARB_PROGRESS", "0")
    assert main(parity) == 0
    without_bar, no_bar = capsys.readouterr()
    assert with_bar == without_bar and "parity OK: 23 tables equal" in with_bar
    assert f"parity [{'#' * 24}] 23/23" in bar and no_bar == ""
    assert main(parity[:-1] + [world.copies[world.windows[1].end][0]]) == 1  # W1.end's state is not W2.end's

    assert main(args) == 2  # not empty any more
    assert "is not empty" in capsys.readouterr().err
    assert main(["restore", "--inbox", str(world.inbox), "--at", "soon", "--dsn", target]) == 2


def test_arb_restore_exits_1_when_a_backup_differs_from_the_senders_digest(
    world, pg_cluster, tmp_path, capsys
):
    """A complete whose file and manifest agree but whose rows are not the snapshot's
    (altered, re-signed): verification passes, the parity against the sender's digest fails."""
    inbox = tmp_path / "inbox"
    shutil.copytree(world.inbox, inbox)
    folder = inbox / "complete" / world.complete.manifest.backup_id
    manifest = read_manifest(folder)
    entry = next(f for f in manifest.files if f.table == P + "report")
    message = [c.name for c in entry.columns].index("message")
    lines = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((folder / entry.name).read_bytes())).read()
    first, rest = lines.split(b"\n", 1)
    fields = first.split(b"\t")
    fields[message] += b" (altered)"
    (folder / entry.name).write_bytes(zstandard.ZstdCompressor().compress(b"\t".join(fields) + b"\n" + rest))
    altered = dataclasses.replace(
        entry,
        bytes=(folder / entry.name).stat().st_size,
        sha256=hashlib.sha256((folder / entry.name).read_bytes()).hexdigest(),
    )
    files = tuple(altered if f is entry else f for f in manifest.files)
    (folder / MANIFEST_NAME).write_bytes(dataclasses.replace(manifest, files=files).to_json())

    target, maintenance = _new_target(pg_cluster)
    assert (
        main(
            [
                "restore",
                "--inbox",
                str(inbox),
                "--at",
                f"{world.windows[1].end:%Y-%m-%dT%H:%M:%SZ}",
                "--dsn",
                target,
                "--create-from",
                maintenance,
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert f"{P}report: DRIFT" in out and "complete's file DIFFERS from the sender's digest" in out
    assert "parity DRIFT: 1 of" in out


# -- the progress helper ----------------------------------------------------------------------


def test_progress_shows_only_on_a_terminal_or_when_forced(monkeypatch):
    monkeypatch.delenv("ARB_PROGRESS", raising=False)
    quiet = io.StringIO()  # not a TTY
    assert list(Progress(quiet).track([1, 2, 3], "work")) == [1, 2, 3] and quiet.getvalue() == ""
    monkeypatch.setenv("ARB_PROGRESS", "1")
    shown = io.StringIO()
    list(Progress(shown).track(["a", "b"], "work"))
    assert shown.getvalue().rstrip().endswith(f"work [{'#' * 24}] 2/2 b") and shown.getvalue().endswith("\n")
    monkeypatch.setenv("ARB_PROGRESS", "0")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    hidden = Tty()
    list(Progress(hidden).track([1], "work"))
    assert hidden.getvalue() == ""
