"""`arb inspect`, `arb quarantined`, `arb requeue` on real backups."""

from __future__ import annotations

import os
import shutil

from arb_pipeline.cli.main import main
from arb_pipeline.receive.quarantine import quarantine
from arb_pipeline_tests.support.backups import make_partial, seeded_sender
from arb_pipeline_tests.support.traffic import traffic


def test_inspect_shows_and_verifies_then_quarantine_and_requeue(sender_db, tmp_path, capsys):
    with seeded_sender(sender_db, tmp_path, seed=9) as (dsn, media, work):
        traffic(work, 60)
        built = make_partial(dsn, tmp_path / "staging", media)
    inbox = tmp_path / "inbox"
    folder = inbox / "partial" / built.manifest.backup_id
    shutil.copytree(built.staged.root, folder)

    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    report = next(f for f in built.manifest.files if f.table == "AndroidRequests_report")
    assert built.manifest.backup_id in out and f"{report.rows:>9} rows" in out and "verification OK" in out

    with open(folder / report.name, "r+b") as fh:  # tamper: inspect says so, with exit 1
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert main(["inspect", str(folder)]) == 1
    assert "sha256" in capsys.readouterr().out

    qdir = tmp_path / "quarantine"
    quarantine(folder, qdir, "sha256 differs (test)")
    assert main(["quarantined", "--quarantine-dir", str(qdir)]) == 0
    assert f"partial/{built.manifest.backup_id}" in capsys.readouterr().out
    assert (
        main(["requeue", built.manifest.backup_id, "--quarantine-dir", str(qdir), "--inbox-dir", str(inbox)])
        == 0
    )
    assert (folder / "manifest.json").is_file() and not (folder / "REASON.txt").exists()


def test_inspect_of_a_folder_without_manifest_is_a_clear_error(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_inspect_of_a_fifo_manifest_is_a_clear_error_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "manifest.json")  # a plain open would wait for a writer forever
    assert main(["inspect", str(tmp_path)]) == 2
    assert "manifest.json is not a regular file" in capsys.readouterr().err
