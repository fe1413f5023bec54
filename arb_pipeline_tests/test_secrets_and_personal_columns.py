"""What must never leave (issue 7). Passwords, the key's passphrase and the
private key never reach logs, the Dagster instance (events, run config, tags, files),
stdout/stderr, `arb check` or error messages; excluded personal columns never reach a
backup file unless ARB_INCLUDE_PERSONAL_COLUMNS=1."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import zstandard
from dagster._serdes import serialize_value
from psycopg import sql

from arb_pipeline.catalog import current_catalog, introspect
from arb_pipeline.dagster_common.partitions import PARTIAL
from arb_pipeline.dev.generator.reference import seed_reference
from arb_pipeline.dev.postgres import find_bin_dir
from arb_pipeline.errors import ArbError
from arb_pipeline.pg.connect import connect
from arb_pipeline.receiver import resources as receiver_resources
from arb_pipeline.receiver.assets import load_partial
from arb_pipeline.sender import resources as sender_resources
from arb_pipeline.sender.assets import complete_backup, partial_backup
from arb_pipeline_tests.support.backups import window_of
from arb_pipeline_tests.support.roles import dsn_as, make_receiver_role
from arb_pipeline_tests.support.ssh_keys import new_key
from arb_pipeline_tests.support.traffic import BASELINE_OPS, traffic_at

UTC = timezone.utc
ARB = str(Path(sys.executable).with_name("arb"))


def _seed(dsn: str, media: Path, seed: int) -> str:
    """Reference data and app traffic in a closed window; returns the window's partition key."""
    with connect(dsn) as conn:
        seed_reference(conn, seed=seed, scale=0.02)
    key = PARTIAL.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(minutes=40)).timestamp())
    traffic_at(dsn, media, seed, window_of(key).start + timedelta(seconds=30), BASELINE_OPS, 60)
    return key


def _errors(exc: BaseException) -> str:
    """The messages of an exception and of every cause and context behind it."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _instance_text(instance, root: Path) -> str:
    """Everything the Dagster instance keeps: every run (config, tags), every event, every file."""
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        parts += [serialize_value(entry) for entry in instance.all_logs(run.run_id)]
    for path in root.rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(parts)


@pytest.mark.sshd
def test_secrets_never_reach_logs_run_metadata_or_output(
    sftp_inbox, smtp_server, sender_db, receiver_db, pg_cluster, tmp_path, caplog, capfd, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    token = uuid.uuid4().hex[:10]
    sender_pw, receiver_pw, passphrase, smtp_pw = (
        f"{what}-Secret-{token}" for what in ("db1", "db2", "key", "mail")
    )
    media, staging = tmp_path / "sender-media", tmp_path / "staging"
    media.mkdir()
    key = _seed(sender_db, media, 43)
    reader = f"arb_tx_{token}"
    with connect(sender_db, autocommit=True) as conn:  # a read-only sender role with a password
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(reader), sql.Literal(sender_pw))
        )
        conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(reader)))
    _, receiver_dsn = make_receiver_role(pg_cluster, receiver_db, receiver_pw)
    key_file = tmp_path / "id_ed25519"
    public = new_key("ed25519", key_file, passphrase.encode())
    key_lines = [line for line in key_file.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    secrets = {
        "sender password": sender_pw,
        "receiver password": receiver_pw,
        "key passphrase": passphrase,
        "SMTP password": smtp_pw,
        **{f"private key line {i}": line for i, line in enumerate(key_lines)},
    }
    env = {
        "ARB_SENDER_DSN": dsn_as(sender_db, reader, sender_pw),
        "ARB_TRANSPORT": "sftp",
        "ARB_SFTP_HOST": sftp_inbox.host,
        "ARB_SFTP_PORT": str(sftp_inbox.port),
        "ARB_SFTP_USER": sftp_inbox.username,
        "ARB_SFTP_KEY_FILE": str(key_file),
        "ARB_SFTP_KEY_PASSPHRASE": passphrase,
        "ARB_SFTP_KNOWN_HOSTS": str(sftp_inbox.known_hosts_path),
        "ARB_SFTP_REMOTE_DIR": sftp_inbox.remote_inbox,
        "ARB_SENDER_MEDIA_DIR": str(media),
        "ARB_STAGING_DIR": str(staging),
        "ARB_REMOTE_MIN_FREE_MB": "0",
        "ARB_RECEIVER_DSN": receiver_dsn,
        "ARB_INBOX_DIR": str(sftp_inbox.inbox_dir),
        "ARB_RECEIVER_MEDIA_DIR": str(tmp_path / "receiver-media"),
        "ARB_QUARANTINE_DIR": str(tmp_path / "q"),
        "ARB_MIN_FREE_MB": "0",
        "ARB_ADMINS": "ops@example.org",
        "ARB_SMTP_HOST": smtp_server.host,
        "ARB_SMTP_PORT": str(smtp_server.port),
        "ARB_SMTP_USER": "arb",
        "ARB_SMTP_PASSWORD": smtp_pw,
        "ARB_PG_DUMP": str(find_bin_dir() / "pg_dump"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "receiver-media").mkdir()
    authorized = sftp_inbox.authorized_keys_path
    original = authorized.read_text()
    authorized.write_text(original + public + "\n")
    texts: dict[str, str] = {}
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            sent = dg.materialize(
                [partial_backup],
                partition_key=key,
                instance=instance,
                resources=sender_resources.from_environment(),
            )
            assert sent.success
            loaded = dg.materialize(
                [load_partial],
                partition_key=key,
                instance=instance,
                resources=receiver_resources.from_environment(),
            )
            assert loaded.success
            with connect(receiver_db) as conn:
                assert conn.execute('SELECT count(*) FROM "AndroidRequests_eventforbusv2"').fetchone()[0] > 0
            # Failed runs: a database that refuses, a DSN libpq can't parse (it quotes URIs whole).
            monkeypatch.setenv(
                "ARB_SENDER_DSN",
                dsn_as(sender_db, reader, sender_pw).replace(f"port={pg_cluster.port}", "port=1"),
            )
            failed = dg.materialize(
                [partial_backup],
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                resources=sender_resources.from_environment(),
            )
            monkeypatch.setenv("ARB_RECEIVER_DSN", f"postgresql://arb:{receiver_pw}@[::1/db")
            failed_too = dg.materialize(
                [load_partial],
                partition_key=key,
                instance=instance,
                raise_on_error=False,
                resources=receiver_resources.from_environment(),
            )
            assert not failed.success and not failed_too.success
            texts["dagster instance"] = _instance_text(instance, home)
        # The scan sees the failures' messages (with the old db.connect, the URI and its password).
        for seen in ("cannot connect to PostgreSQL", "can't be parsed", "partial_backup"):
            assert seen in texts["dagster instance"]
        for dsn in (
            env["ARB_SENDER_DSN"].replace(f"port={pg_cluster.port}", "port=1"),
            f"postgresql://arb:{receiver_pw}@[::1/db",
            f"postgresql://arb:{receiver_pw}@127.0.0.1:1/db",
        ):
            with pytest.raises(ArbError) as err:
                connect(dsn)
            texts[f"error from {dsn[:12]}"] = _errors(err.value)
        monkeypatch.setenv("ARB_SENDER_DSN", env["ARB_SENDER_DSN"])
        monkeypatch.setenv("ARB_RECEIVER_DSN", env["ARB_RECEIVER_DSN"])
        check = subprocess.run(
            [ARB, "check", "--role", "both"], capture_output=True, text=True, timeout=300, env=os.environ
        )
        texts["arb check"] = check.stdout + check.stderr
        for line in ("ARB_SENDER_DSN", "ARB_RECEIVER_DSN", "receiver host key", "remote folder writable"):
            assert re.search(rf"ok +{line}", check.stdout), check.stdout  # it logged in with each secret
        monkeypatch.setenv("ARB_SENDER_DSN", f"postgresql://{reader}:{sender_pw}@127.0.0.1:1/x")
        check_json = subprocess.run(
            [ARB, "check", "--role", "both", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=os.environ,
        )
        assert check_json.returncode == 1
        texts["arb check --json"] = check_json.stdout + check_json.stderr
    finally:
        authorized.write_text(original)
    captured = capfd.readouterr()
    texts["stdout/stderr"] = captured.out + captured.err
    texts["python logging"] = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    leaks = [
        (what, where) for where, text in texts.items() for what, secret in secrets.items() if secret in text
    ]
    assert leaks == []


# -- personal columns -------------------------------------------------------------------------


def _set_canaries(dsn: str) -> list[str]:
    """A distinctive value in every excluded column of every row; returns the values."""
    values = []
    with connect(dsn) as conn:
        for spec in (s for s in current_catalog().specs if s.excluded):
            info = introspect(conn, [spec.name])[spec.name]
            for col in spec.excluded:
                value = sql.SQL(
                    "gen_random_uuid()"
                    if info.column(col).type == "uuid"
                    else "'canary-' || gen_random_uuid() || '@example.invalid'"
                )
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = {}").format(
                        sql.Identifier(spec.name), sql.Identifier(col), value
                    )
                )
                values += [
                    v
                    for (v,) in conn.execute(
                        sql.SQL("SELECT {}::text FROM {}").format(
                            sql.Identifier(col), sql.Identifier(spec.name)
                        )
                    )
                ]
        conn.commit()
    return values


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, raw, and decompressed too when it is zstd."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            out[str(path)] = data
            if path.name.endswith(".zst"):
                out[f"{path} (decompressed)"] = (
                    zstandard.ZstdDecompressor()
                    .stream_reader(io.BytesIO(data), read_across_frames=True)
                    .read()
                )
    return out


def _backups(monkeypatch, tmp_path: Path, name: str, key: str) -> dict[str, bytes]:
    """A partial and a complete through the sender's Dagster assets, configured from the
    environment, into a local inbox; returns every file they left (inbox and staging)."""
    inbox, staging = tmp_path / name, tmp_path / f"{name}-staging"
    monkeypatch.setenv("ARB_INBOX_DIR", str(inbox))
    monkeypatch.setenv("ARB_STAGING_DIR", str(staging))
    day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    for assets, partition in ((partial_backup, key), (complete_backup, day)):
        assert dg.materialize(
            [assets], partition_key=partition, resources=sender_resources.from_environment()
        ).success
    files = _contents(inbox)
    names = {Path(n).name for n in files}
    assert {"restore.sql", "schema.sql", "media.tar"} <= names, names
    assert sum("AndroidRequests_transappuser" in n for n in names) >= 1, names
    return {**files, **(_contents(staging) if staging.exists() else {})}


def test_excluded_personal_columns_never_reach_a_backup_file(sender_db, tmp_path, monkeypatch):
    media = tmp_path / "media"
    media.mkdir()
    key = _seed(sender_db, media, 47)
    canaries = _set_canaries(sender_db)
    assert len(canaries) >= 2
    for name, value in {
        "ARB_SENDER_DSN": sender_db,
        "ARB_TRANSPORT": "local",
        "ARB_SENDER_MEDIA_DIR": str(media),
        "ARB_PG_DUMP": str(find_bin_dir() / "pg_dump"),
        "ARB_SENDER_ID": "privacy",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ARB_INCLUDE_PERSONAL_COLUMNS", raising=False)
    files = _backups(monkeypatch, tmp_path, "inbox", key)
    found = sorted(
        {(value, name) for name, data in files.items() for value in canaries if value.encode() in data}
    )
    assert found == []

    # The switch works, so the search above would have found them.
    monkeypatch.setenv("ARB_INCLUDE_PERSONAL_COLUMNS", "1")
    files = _backups(monkeypatch, tmp_path, "inbox-personal", key)
    blob = b"\n".join(files.values())
    assert [v for v in canaries if v.encode() not in blob] == []
