"""The settings package: every setting parses its default; a bad value is a ConfigError that
names the setting and the fix (never a secret's value); `arb check` and the code locations
read the same settings the same way; docs/settings.md and deploy/arb.env.example match it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arb_pipeline import settings
from arb_pipeline.cli.main import main
from arb_pipeline.errors import ConfigError
from arb_pipeline.settings.markdown import markdown

REPO = Path(__file__).resolve().parents[1]
ARB = str(Path(sys.executable).with_name("arb"))


@pytest.mark.parametrize("setting", settings.ALL, ids=lambda s: s.name)
def test_each_setting_parses_its_default(setting):
    assert setting.read({}) == setting.default_value
    assert setting.description and setting.side in ("sender", "receiver", "both", "arb")


def test_every_group_builds_from_an_empty_environment_with_the_defaults():
    receiver = settings.ReceiverSettings.from_env({})
    assert receiver.inbox_dir == "/srv/arb/inbox" and receiver.min_free_mb == 500.0
    assert settings.MailSettings.from_env({"ARB_SMTP_SECURITY": "starttls"}).port == 587
    assert settings.SharedSettings.from_env({"ARB_PARTIAL_MINUTES": "10"}).partial_fail_window.seconds == 1800
    names = [s.name for group in settings.groups.GROUPS for s in group.settings()]
    assert len(set(names)) == len(names) - 1  # ARB_INBOX_DIR: the sender's local transport and the receiver


@pytest.mark.parametrize(
    "group, name, value",
    [
        (settings.ReceiverSettings, "ARB_MIN_FREE_MB", "abc"),
        (settings.ReceiverSettings, "ARB_MIN_FREE_MB", "-1"),
        (settings.SharedSettings, "ARB_PARTIAL_MINUTES", "7"),
        (settings.SharedSettings, "ARB_TIMEZONE", "Mars/Olympus"),
        (settings.SharedSettings, "ARB_GO_LIVE", "yesterday"),
        (settings.SenderSettings, "ARB_COMPLETE_AT", "25:00"),
        (settings.SenderSettings, "ARB_INCLUDE_PERSONAL_COLUMNS", "true"),
        (settings.DestinationSettings, "ARB_TRANSPORT", "ftp"),
        (settings.DestinationSettings, "ARB_SFTP_PORT", "ssh"),
        (settings.MailSettings, "ARB_SMTP_SECURITY", "tls"),
        (settings.MailSettings, "ARB_ADMINS", "root"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_setting_and_the_fix(group, name, value):
    with pytest.raises(ConfigError) as err:
        group.from_env({name: value})
    assert err.value.setting == name
    assert f"{name}={value!r}" in str(err.value)
    assert err.value.fix.startswith(("use ", "list ")) and str(err.value).endswith(err.value.fix)


def test_all_bad_values_are_named_at_once_and_a_secret_never_shown():
    with pytest.raises(settings.SettingsError) as err:
        settings.ReceiverSettings.from_env({"ARB_MIN_FREE_MB": "abc", "ARB_LOCAL_TIMEZONE": "Nowhere/X"})
    assert [e.setting for e in err.value.errors] == ["ARB_MIN_FREE_MB", "ARB_LOCAL_TIMEZONE"]
    pin = settings.Setting("ARB_TEST_PIN", "", settings.setting.whole(0), "both", "a secret", secret=True)
    with pytest.raises(ConfigError) as err:
        pin.read({"ARB_TEST_PIN": "hunter2"})
    assert "ARB_TEST_PIN" in str(err.value) and "hunter2" not in str(err.value)
    environ = {"ARB_SENDER_DSN": "password=hunter2", "ARB_SMTP_PASSWORD": "hunter2"}
    for group in (settings.SenderSettings, settings.MailSettings):
        assert "hunter2" not in repr(group.from_env(environ))


def test_arb_check_collects_bad_settings_as_failures_and_goes_on():
    problems: list = []
    receiver = settings.ReceiverSettings.from_env({"ARB_MIN_FREE_MB": "abc"}, problems=problems)
    assert receiver.min_free_mb == 500.0 and [p.setting for p in problems] == ["ARB_MIN_FREE_MB"]


def _receiver_env(tmp_path: Path, min_free_mb: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARB_", "DAGSTER_"))}
    for sub in ("inbox", "media", "quarantine"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return {
        **env,
        "ARB_RECEIVER_DSN": "host=127.0.0.1 port=1 dbname=nothing",
        "ARB_INBOX_DIR": str(tmp_path / "inbox"),
        "ARB_RECEIVER_MEDIA_DIR": str(tmp_path / "media"),
        "ARB_QUARANTINE_DIR": str(tmp_path / "quarantine"),
        "ARB_SMTP_HOST": "127.0.0.1",
        "ARB_SMTP_PORT": "1",
        "ARB_MIN_FREE_MB": min_free_mb,
    }


def _load_receiver(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "from arb_pipeline.receiver.definitions import defs; "
        "print(defs.resources['receiver_settings'].min_free_mb)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )


def _check_receiver(env: dict[str, str]) -> dict[str, dict]:
    done = subprocess.run(
        [ARB, "check", "--role", "receiver", "--json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 1, done.stderr  # the database is unreachable: a failure, not a crash
    return {i["name"]: i for i in json.loads(done.stdout)["receiver"]}


def test_a_fractional_min_free_mb_is_taken_alike_by_arb_check_and_the_code_location(tmp_path):
    env = _receiver_env(tmp_path, "0.5")
    items = _check_receiver(env)
    assert items["ARB_INBOX_DIR"]["status"] == "ok" and items["ARB_QUARANTINE_DIR"]["status"] == "ok"
    assert "ARB_MIN_FREE_MB" not in items
    loaded = _load_receiver(env)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "0.5", loaded.stderr[-2000:]

    env = _receiver_env(tmp_path, "abc")  # a bad value: named by both, with the same words
    item = _check_receiver(env)["ARB_MIN_FREE_MB"]
    assert item["status"] == "FAIL" and item["detail"] == "ARB_MIN_FREE_MB='abc' is not a number"
    loaded = _load_receiver(env)
    assert loaded.returncode != 0 and "ARB_MIN_FREE_MB='abc' is not a number" in loaded.stderr


def test_arb_requeue_and_quarantined_default_to_the_receivers_folders(tmp_path, monkeypatch, capsys):
    from arb_pipeline.cli import backups
    from arb_pipeline.receive.quarantine import quarantine
    from arb_pipeline.receiver.resources import from_environment

    for name in ("ARB_INBOX_DIR", "ARB_QUARANTINE_DIR"):
        monkeypatch.delenv(name, raising=False)
    receiver = from_environment()["receiver_settings"]
    args = backups_parser().parse_args(["requeue", "partial-x"])
    assert backups._inbox(args) == Path(receiver.inbox_dir)
    assert backups._quarantine(args) == Path(receiver.quarantine_dir)

    inbox, qdir = tmp_path / "inbox", tmp_path / "quarantine"
    monkeypatch.setenv("ARB_INBOX_DIR", str(inbox))
    monkeypatch.setenv("ARB_QUARANTINE_DIR", str(qdir))
    backup = inbox / "partial" / "partial-2026-11-25-10-05-abcd1234"
    backup.mkdir(parents=True)
    (backup / "manifest.json").write_text("{}")
    quarantine(backup, qdir, "a test")
    assert (
        main(["quarantined"]) == 0 and "partial/partial-2026-11-25-10-05-abcd1234" in capsys.readouterr().out
    )
    assert main(["requeue", backup.name]) == 0
    assert (backup / "manifest.json").is_file() and not (qdir / "partial" / backup.name).exists()


def backups_parser():
    import argparse

    from arb_pipeline.cli import backups

    parser = argparse.ArgumentParser()
    backups.register(parser.add_subparsers())
    return parser


def test_docs_settings_md_is_generated_from_the_settings():
    assert (REPO / "docs" / "settings.md").read_text() == markdown(), (
        "docs/settings.md is stale: python -m arb_pipeline.settings --markdown > docs/settings.md"
    )
    for s in settings.ALL:
        assert f"`{s.name}`" in markdown()


def test_the_env_example_names_only_settings_that_exist():
    text = (REPO / "deploy" / "arb.env.example").read_text()
    named = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, flags=re.M)
    assert len(named) > 30
    assert [n for n in named if n not in settings.BY_NAME] == []
    for name in named:  # and each value there parses
        value = re.search(rf"^#?\s*{name}=(.*)$", text, flags=re.M).group(1).strip().strip('"')
        settings.BY_NAME[name].parse_text(value)
