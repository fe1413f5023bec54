"""Benchmark steps, each run in its own interpreter so its peak RSS is its own."""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

UTC = timezone.utc


def build_complete(sender, media, staging, pg_dump, fingerprints=False):
    from arb_pipeline.extract.build import build_complete as build
    from arb_pipeline.extract.tables import Window

    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    built = build(
        sender,
        Path(staging),
        partition_key=day.strftime("%Y-%m-%d"),
        window=Window(day - timedelta(days=1), day),
        unique=str(time.time_ns()),
        media_dir=Path(media),
        sender_id="bench",
        pg_dump=pg_dump,
        fingerprints=fingerprints,
    )
    return {"path": str(built.staged.root), "bytes": sum(f.bytes for f in built.manifest.files)}


def build_partial(sender, media, staging, pg_dump, window_start):
    from arb_pipeline.extract.build import build_partial as build
    from arb_pipeline.extract.tables import Window

    start = datetime.fromisoformat(window_start)
    t = time.perf_counter()
    built = build(
        sender,
        Path(staging),
        partition_key=start.strftime("%Y-%m-%d-%H-%M"),
        window=Window(start, start + timedelta(minutes=5)),
        unique=str(time.time_ns()),
        media_dir=Path(media),
        sender_id="bench",
        overlap=timedelta(0),
    )
    seconds = time.perf_counter() - t
    return {
        "path": str(built.staged.root),
        "rows": sum(f.rows or 0 for f in built.manifest.table_files()),
        "seconds": seconds,
    }


def copy_baselines(sender, receiver, psql, window_start, folder):
    """The same rows a partial of ``window_start`` ships, moved by plain psql: COPY of each
    table's window TO files (the extraction's baseline), then COPY FROM those files into
    empty copies of the receiver's tables, indexes included (the load's baseline)."""
    from psycopg import sql

    from arb_pipeline.extract.tables import Window, partial_selects
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.pg.quote import ident_list

    start = datetime.fromisoformat(window_start)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with connect(sender) as conn:
        selects = partial_selects(conn, Window(start, start + timedelta(minutes=5)), overlap=timedelta(0))
        out_lines = [
            f"\\copy ({s.query.as_string(conn)}) TO '{folder / f'{i}.copy'}'" for i, s in enumerate(selects)
        ]
    (folder / "out.psql").write_text(
        "\n".join(["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;", *out_lines, "COMMIT;"])
    )
    t = time.perf_counter()
    subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(folder / "out.psql"), "-d", sender], check=True
    )
    copy_to_s = time.perf_counter() - t
    rows = sum((folder / f"{i}.copy").read_bytes().count(b"\n") for i in range(len(selects)))
    with connect(receiver, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench_copy")
        for i, s in enumerate(selects):
            conn.execute(
                sql.SQL("CREATE TABLE bench_copy.{} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(f"t{i}"), sql.Identifier(s.table)
                )
            )
        in_lines = [
            f"\\copy bench_copy.t{i} ({ident_list(c.name for c in s.columns).as_string(conn)}) "
            f"FROM '{folder / f'{i}.copy'}'"
            for i, s in enumerate(selects)
        ]
    (folder / "in.psql").write_text("\n".join(["BEGIN;", *in_lines, "COMMIT;"]))
    t = time.perf_counter()
    subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(folder / "in.psql"), "-d", receiver], check=True
    )
    copy_from_s = time.perf_counter() - t
    with connect(receiver, autocommit=True) as conn:
        conn.execute("DROP SCHEMA bench_copy CASCADE")
    return {"copy_to_s": copy_to_s, "copy_from_s": copy_from_s, "rows": rows}


def _transport(inbox, sftp):
    if sftp:
        from arb_pipeline.dev.sshd import LocalSshd
        from arb_pipeline.transport.sftp import SftpTransport

        sshd = LocalSshd(Path(inbox).parent / "sshd").start()
        return (
            SftpTransport(
                sshd.host,
                sshd.port,
                sshd.username,
                str(sshd.client_key_path),
                str(sshd.known_hosts_path),
                sshd.remote_inbox,
            ),
            Path(sshd.inbox_dir),
            sshd,
        )
    from arb_pipeline.transport import LocalFolderTransport

    return LocalFolderTransport(Path(inbox)), Path(inbox), None


def publish_and_load(backup, inbox, receiver, receiver_media, sftp):
    from arb_pipeline.extract.build import BuiltBackup, publish
    from arb_pipeline.load.apply import load_backup
    from arb_pipeline.package.reader import read_manifest
    from arb_pipeline.package.verify import verify_files
    from arb_pipeline.package.writer import StagedBackup
    from arb_pipeline.pg.connect import connect
    from arb_pipeline.receive.media import install_media

    backup = Path(backup)
    manifest = read_manifest(backup)
    staged = StagedBackup(backup)
    staged.entries = list(manifest.files)
    transport, local_inbox, sshd = _transport(inbox, sftp)
    try:
        t = time.perf_counter()
        publish(transport, BuiltBackup(staged, manifest))
        transfer_s = time.perf_counter() - t
    finally:
        transport.close()
        if sshd:
            sshd.stop()
    folder = local_inbox / manifest.kind / manifest.backup_id
    t = time.perf_counter()
    manifest = verify_files(folder)
    verify_s = time.perf_counter() - t
    t = time.perf_counter()
    Path(receiver_media).mkdir(exist_ok=True)
    media = manifest.file("media")
    if media:
        install_media(folder / media.name, manifest.media, Path(receiver_media))
    with connect(receiver) as conn:
        result = load_backup(
            conn,
            folder,
            manifest,
            hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest(),
            dsn=receiver,
        )
    load_s = time.perf_counter() - t
    phases: dict[str, float] = {}
    for t in result.tables:
        for k, v in t.seconds.items():
            phases[k] = phases.get(k, 0.0) + v
    per_table = {
        t.table: {k: round(v, 2) for k, v in t.seconds.items()}
        | ({"rows compared": t.rows_compared} if t.rows_compared is not None else {})
        | ({"segments held": len(t.held_segments)} if t.held_segments else {})
        | {"rows": t.rows_in_backup}
        for t in result.tables
        if sum(t.seconds.values()) > 0.5
    }
    return {
        "transfer_s": transfer_s,
        "verify_s": verify_s,
        "load_s": load_s,
        "rows": result.rows_in_backup,
        "outcome": result.outcome,
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "walls": {k: round(v, 2) for k, v in result.seconds.items()},
        "per_table": per_table,
    }


def catch_up(sender, receiver, media, staging, inbox, receiver_media, count, window_start):
    """Build ``count`` consecutive 5-minute partials (not timed), then verify and load them all."""
    from arb_pipeline.extract.build import build_partial as build
    from arb_pipeline.extract.build import publish
    from arb_pipeline.extract.tables import Window
    from arb_pipeline.receive.inbox import find_published, receive
    from arb_pipeline.transport import LocalFolderTransport

    start = datetime.fromisoformat(window_start)
    transport = LocalFolderTransport(Path(inbox))
    for i in range(count):
        w = Window(start + timedelta(minutes=5 * i), start + timedelta(minutes=5 * (i + 1)))
        built = build(
            sender,
            Path(staging),
            partition_key=w.start.strftime("%Y-%m-%d-%H-%M"),
            window=w,
            unique=f"{i:06d}",
            media_dir=Path(media),
            sender_id="bench",
        )
        publish(transport, built)
    published, _ = find_published(Path(inbox))
    t = time.perf_counter()
    rows = 0
    for p in published:
        rows += receive(
            p.path, dsn=receiver, media_dir=Path(receiver_media), quarantine_dir=Path(inbox).parent / "q"
        ).load.rows_in_backup
    return {"count": len(published), "load_s": time.perf_counter() - t, "rows": rows}


if __name__ == "__main__":
    step, kwargs = sys.argv[1], json.loads(sys.argv[2])
    result = globals()[step](**kwargs)
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))
