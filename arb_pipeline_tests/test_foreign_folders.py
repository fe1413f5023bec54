"""Folders the pipeline did not create are never deleted: the sender's staging sweep takes
only its own marked run folders, ARB_STAGING_DIR refuses /, home folders, the inbox and the
media folders (at the code location's load, in `arb check` and in the settings' parse), and
retention leaves every inbox entry that is not a backup folder the pipeline wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from arb_pipeline import settings
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.extract.build import publish
from arb_pipeline.extract.staging import MARKER_NAME, create_run_folder
from arb_pipeline.package.manifest import MANIFEST_NAME
from arb_pipeline.receive.inbox import apply_retention_after_load
from arb_pipeline.sender.assets import partial_backup
from arb_pipeline.sender.resources import BackupDestination, BackupPublisher, SenderDatabase, SenderSettings
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline_tests.support.backups import load, make_partial

REPO = Path(__file__).resolve().parents[1]
ARB = str(Path(sys.executable).with_name("arb"))


def backdate(path: Path, hours: float) -> None:
    """Every mtime in a tree, children first (creating entries touches the parent)."""
    stamp = time.time() - hours * 3600
    for p in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(p, (stamp, stamp), follow_symlinks=False)
    os.utime(path, (stamp, stamp), follow_symlinks=False)


# -- the staging sweep ----------------------------------------------------------------------


def test_the_sweep_takes_only_the_pipelines_own_old_run_folders(sender_db, tmp_path):
    staging, media, inbox = tmp_path / "staging", tmp_path / "media", tmp_path / "inbox"
    media.mkdir()
    dead_run = create_run_folder(staging, "run-that-died")  # a run killed before its cleanup
    (dead_run / "partial-x").mkdir()
    (dead_run / "partial-x" / "data.zst").write_bytes(b"left over")
    other = staging / "other-project"  # another program's folder, older than the sweep age
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "results.csv").write_text("a,b\n1,2\n")
    impostor = staging / "impostor"  # the marker's name, not its text
    impostor.mkdir()
    (impostor / MARKER_NAME).write_text("mine\n")
    elsewhere = create_run_folder(tmp_path / "elsewhere", "linked-run")
    (staging / "a-link").symlink_to(elsewhere)  # a link to a marked folder is not ours either
    (staging / "notes.txt").write_text("keep me")
    for path in (dead_run, other, impostor, elsewhere):
        backdate(path, hours=7)

    instance = dg.DagsterInstance.ephemeral()
    destination = BackupDestination(kind="local", local_dir=str(inbox))
    resources = {
        "sender_db": SenderDatabase(dsn=sender_db),
        "sender_settings": SenderSettings(media_dir=str(media), staging_dir=str(staging)),
        "backup_destination": destination,
        "backup_publisher": BackupPublisher(destination=destination),
    }
    key = PARTIAL.get_partition_key_for_timestamp(
        (datetime.now(timezone.utc) - timedelta(hours=1)).timestamp()
    )

    def run() -> list[str]:
        result = dg.materialize([partial_backup], partition_key=key, instance=instance, resources=resources)
        assert result.success
        return [
            e.user_message for e in instance.all_logs(result.run_id) if "ARB_STAGING_DIR" in e.user_message
        ]

    messages = run()
    assert not dead_run.exists()
    assert (other / "sub" / "results.csv").read_text() == "a,b\n1,2\n"
    assert (impostor / MARKER_NAME).read_text() == "mine\n"
    assert (elsewhere / MARKER_NAME).is_file() and (staging / "a-link").is_symlink()
    assert (staging / "notes.txt").read_text() == "keep me"
    assert len(list((inbox / "partial").iterdir())) == 1  # the run itself published its backup
    assert {p.name for p in staging.iterdir() if not p.name.startswith(".")} == {
        "other-project",
        "impostor",
        "a-link",
        "notes.txt",
    }  # and removed its own run folder
    assert any("run-that-died" in m and "removed" in m for m in messages)
    reported = sorted(
        n for n in ("other-project", "impostor", "a-link", "notes.txt") if any(n in m for m in messages)
    )
    assert reported == ["a-link", "impostor", "notes.txt", "other-project"]

    assert run() == []  # reported once: the next runs stay quiet
    assert (other / "sub" / "results.csv").exists()
    (staging / "new-arrival").mkdir()
    assert [m for m in run() if "new-arrival" in m] and (staging / "new-arrival").is_dir()


# -- ARB_STAGING_DIR refused -------------------------------------------------------------------


def _sender_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARB_", "DAGSTER_"))}
    for sub in ("srv/inbox", "srv/media", "srv/receiver-media", "home"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "HOME": str(tmp_path / "home"),
        "ARB_SENDER_DSN": "host=127.0.0.1 port=1 dbname=nothing",
        "ARB_TRANSPORT": "local",
        "ARB_INBOX_DIR": str(tmp_path / "srv/inbox"),
        "ARB_SENDER_MEDIA_DIR": str(tmp_path / "srv/media"),
        "ARB_RECEIVER_MEDIA_DIR": str(tmp_path / "srv/receiver-media"),
        "ARB_SMTP_HOST": "127.0.0.1",
        "ARB_SMTP_PORT": "1",
    }


REFUSED = {  # the staging value (from tmp_path's folders) and what the error says of it
    "root": ("/", "is the root folder"),
    "this user's home": ("{tmp}/home", "is a home folder"),
    "a /home/* folder": ("/home/someone", "is a home folder"),
    "/home": ("/home", "holds the users' home folders"),
    "/root": ("/root", "is a home folder"),
    "the inbox": ("{tmp}/srv/inbox", "is the folder of ARB_INBOX_DIR"),
    "inside the inbox": ("{tmp}/srv/inbox/staging", "is inside the folder of ARB_INBOX_DIR"),
    "the media folder": ("{tmp}/srv/media", "is the folder of ARB_SENDER_MEDIA_DIR"),
    "the receiver's media folder": ("{tmp}/srv/receiver-media", "is the folder of ARB_RECEIVER_MEDIA_DIR"),
    "a parent of the inbox": ("{tmp}/srv", "holds the folder of ARB_INBOX_DIR"),
    "a parent of the home": ("{tmp}", "holds the home folder"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_staging_dir_that_is_not_the_pipelines_own_is_refused(case, tmp_path, monkeypatch):
    value, words = REFUSED[case]
    value = value.format(tmp=tmp_path)
    env = {**_sender_env(tmp_path), "ARB_STAGING_DIR": value}
    monkeypatch.setenv("HOME", env["HOME"])  # the settings' parse, in this process
    with pytest.raises(settings.SettingError) as err:
        settings.SenderSettings.from_env(env)
    assert err.value.setting == "ARB_STAGING_DIR" and f"ARB_STAGING_DIR={value!r} {words}" in str(err.value)
    assert "/var/tmp/arb_pipeline" in err.value.fix  # the fix: a folder of the pipeline's own

    done = subprocess.run(
        [ARB, "check", "--role", "sender", "--json"], env=env, capture_output=True, text=True, timeout=180
    )
    items = [i for i in json.loads(done.stdout)["sender"] if i["name"] == "ARB_STAGING_DIR"]
    assert done.returncode == 1 and [i["status"] for i in items] == ["FAIL"], done.stderr[-2000:]
    assert f"ARB_STAGING_DIR={value!r} {words}" in items[0]["detail"] and items[0]["fix"] == err.value.fix


@pytest.mark.parametrize("case", ["root", "a parent of the inbox", "this user's home"])
def test_the_sender_code_location_does_not_load_with_a_refused_staging_dir(case, tmp_path):
    value, words = REFUSED[case]
    value = value.format(tmp=tmp_path)
    env = {**_sender_env(tmp_path), "ARB_STAGING_DIR": value}
    done = subprocess.run(
        [sys.executable, "-c", "import arb_pipeline.sender.definitions"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode != 0 and f"ARB_STAGING_DIR={value!r} {words}" in done.stderr, done.stderr[-2000:]


def test_a_staging_dir_of_its_own_loads(tmp_path):
    env = {**_sender_env(tmp_path), "ARB_STAGING_DIR": str(tmp_path / "home" / "arb-staging")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from arb_pipeline.sender.definitions import SENDER; print(SENDER.staging_dir)",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and done.stdout.strip() == env["ARB_STAGING_DIR"], done.stderr[-2000:]


# -- retention --------------------------------------------------------------------------------


def test_retention_leaves_every_inbox_entry_that_is_not_a_backup_it_loaded(sender_db, receiver_db, tmp_path):
    inbox, media = tmp_path / "inbox", tmp_path / "media"
    media.mkdir()
    transport = LocalFolderTransport(inbox)
    delivered = []
    for _ in range(2):  # two real backups, delivered and loaded (the ledger has them)
        built = make_partial(sender_db, tmp_path / "staging", media)
        publish(transport, built)
        assert load(receiver_db, built).outcome == "loaded"
        delivered.append(inbox / "partial" / built.manifest.backup_id)
    plain, with_extra = delivered
    (with_extra / "someone-elses.csv").write_text("x")  # not the pipeline's: the folder stays

    partial = inbox / "partial"
    foreign = {
        "other-project": "a folder of another program, with files",
        "lost+found": "an empty folder of another name",
        "partial-2026-01-01-00-00-zzz.bak": "a name close to a backup id",
    }
    for name in foreign:
        (partial / name).mkdir()
    (partial / "other-project" / "data.bin").write_bytes(b"\0" * 10)
    (partial / "complete-2026-01-01-abc").mkdir()  # a complete's name in the partial folder
    (partial / "partial-2026-01-02-00-00-file").write_text("a file named like a backup")
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "precious.txt").write_text("keep")
    (partial / "partial-2026-01-03-00-00-link").symlink_to(tmp_path / "target")
    for entry in partial.iterdir():
        backdate(entry, hours=24 * 30)

    later = datetime.now(timezone.utc) + timedelta(days=30)  # every backup is past its limit
    deleted = apply_retention_after_load(inbox, receiver_db, partial_days=1, complete_days=4, now=later)
    assert deleted == [plain]  # the loaded backup holding only its own files, and nothing else
    assert (with_extra / "someone-elses.csv").exists() and (with_extra / MANIFEST_NAME).exists()
    assert (partial / "other-project" / "data.bin").exists()
    assert all((partial / name).is_dir() for name in foreign)
    assert (partial / "complete-2026-01-01-abc").is_dir()
    assert (partial / "partial-2026-01-02-00-00-file").read_text() == "a file named like a backup"
    assert (tmp_path / "target" / "precious.txt").read_text() == "keep"
    assert (partial / "partial-2026-01-03-00-00-link").is_symlink()
