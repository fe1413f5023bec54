"""Each local service really answers: PostgreSQL, OpenSSH sshd (SFTP only), SMTP; and in CI
they, and the suite, run as an unprivileged user."""

from __future__ import annotations

import grp
import io
import os
import pwd
import shutil
import smtplib
import socket
from email.message import EmailMessage

import paramiko
import psycopg
import pytest

from arb_pipeline.dev.sshd import LocalSshd, generate_ed25519_key

# ---- PostgreSQL ------------------------------------------------------------------------


def test_postgres_answers_with_the_sender_schema(sender_db):
    with psycopg.connect(sender_db) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name LIKE %s",
            ("AndroidRequests\\_%",),
        ).fetchone()
        (one,) = conn.execute("SELECT 1 + 1").fetchone()
    assert count == 23  # every TransApp table of 0001_transapp_tables.sql (see test_migrate)
    assert one == 2


# ---- sshd ------------------------------------------------------------------------------


def _sftp_client(server: LocalSshd, known_hosts=None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or server.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        server.host,
        port=server.port,
        username=server.username,
        key_filename=str(server.client_key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    return client


@pytest.mark.sshd
def test_sftp_put_and_get_round_trip(sftp_inbox):
    payload = bytes(range(256)) * 64
    with _sftp_client(sftp_inbox) as client, client.open_sftp() as sftp:
        remote = f"{sftp_inbox.remote_inbox}/probe.bin"
        sftp.putfo(io.BytesIO(payload), remote)
        back = io.BytesIO()
        sftp.getfo(remote, back)
        assert sftp.listdir(sftp_inbox.remote_inbox) == ["probe.bin"]
    assert back.getvalue() == payload
    local = sftp_inbox.inbox_dir / "probe.bin"
    assert local.read_bytes() == payload
    assert local.stat().st_uid == sftp_inbox.inbox_dir.stat().st_uid  # written as the sftp user


@pytest.mark.sshd
def test_sftp_user_may_not_write_outside_the_inbox(sftp_inbox):
    # Chrooted, "/" is the root-owned chroot; unprivileged, the real root. The chroot itself
    # (the client sees only /inbox) is test_sshd_hardening's, run as root.
    with _sftp_client(sftp_inbox) as client, client.open_sftp() as sftp:
        with pytest.raises(PermissionError):
            sftp.putfo(io.BytesIO(b"x"), "/outside.txt")
        with pytest.raises(PermissionError):  # ForceCommand internal-sftp -P symlink,hardlink
            sftp.symlink(sftp_inbox.remote_inbox, f"{sftp_inbox.remote_inbox}/link")
    assert list(sftp_inbox.inbox_dir.iterdir()) == []


@pytest.mark.sshd
def test_no_shell_only_sftp(sftp_inbox):
    with _sftp_client(sftp_inbox) as client:
        stdin, stdout, stderr = client.exec_command("id", timeout=5)
        stdin.channel.shutdown_write()
        out, err = stdout.read(), stderr.read()
        status = stdout.channel.recv_exit_status()
        # sshd answers a command under "ForceCommand internal-sftp" with a refusal, not a shell.
        assert b"uid=" not in out + err
        assert b"This service allows sftp connections only." in out + err
        assert status != 0
        with pytest.raises(paramiko.SSHException):  # PermitTTY no
            client.invoke_shell()


@pytest.mark.sshd
def test_unknown_host_is_refused(sftp_inbox, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts") as caught:
        _sftp_client(sftp_inbox, known_hosts=empty)
    assert not isinstance(caught.value, paramiko.BadHostKeyException)


@pytest.mark.sshd
def test_changed_host_key_is_refused(sftp_inbox, tmp_path):
    old = tmp_path / "known_hosts.old"
    shutil.copy(sftp_inbox.known_hosts_path, old)
    port, pid = sftp_inbox.port, sftp_inbox.pid
    new_line = sftp_inbox.regenerate_host_key(update_known_hosts=True)
    assert sftp_inbox.port == port and sftp_inbox.pid not in (None, pid)
    with pytest.raises(paramiko.BadHostKeyException):
        _sftp_client(sftp_inbox, known_hosts=old)
    assert new_line.split()[1] in sftp_inbox.known_hosts_path.read_text()
    with _sftp_client(sftp_inbox) as client, client.open_sftp() as sftp:  # the new key is trusted again
        assert sftp.listdir(sftp_inbox.remote_inbox) == []


@pytest.mark.sshd
def test_other_keys_root_and_passwords_are_refused(sftp_inbox, tmp_path):
    stranger = tmp_path / "stranger_key"
    generate_ed25519_key(stranger, "stranger")
    for username, kwargs in (
        (sftp_inbox.username, {"key_filename": str(stranger)}),
        ("root", {"key_filename": str(sftp_inbox.client_key_path)}),
        (sftp_inbox.username, {"password": "*"}),
    ):
        client = paramiko.SSHClient()
        client.load_host_keys(str(sftp_inbox.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with client, pytest.raises(paramiko.AuthenticationException):
            client.connect(
                sftp_inbox.host,
                port=sftp_inbox.port,
                username=username,
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
                **kwargs,
            )


@pytest.mark.sshd
def test_sshd_listens_on_loopback_only(sftp_inbox):
    config = sftp_inbox.config_path.read_text()
    assert "ListenAddress 127.0.0.1" in config
    with socket.create_connection(("127.0.0.1", sftp_inbox.port), timeout=5) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-OpenSSH")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _uid_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


@pytest.mark.sshd
def test_ci_runs_the_suite_and_its_services_unprivileged(sftp_inbox, pg_cluster):
    if not _flag("ARB_EXPECT_UNPRIVILEGED"):
        pytest.skip("ARB_EXPECT_UNPRIVILEGED is set by .ci/run, which runs the suite as an unprivileged user")
    me = os.geteuid()
    assert me != 0 and os.getuid() != 0
    assert 0 not in os.getgroups() and all(
        g.gr_gid not in os.getgroups() for g in grp.getgrall() if g.gr_name in ("sudo", "wheel", "admin")
    )
    assert not sftp_inbox.chroot and sftp_inbox.username == pwd.getpwuid(me).pw_name
    assert _uid_of(sftp_inbox.pid) == me and _uid_of(pg_cluster.pid) == me  # started by this user, not root
    with _sftp_client(sftp_inbox) as client, client.open_sftp() as sftp:
        sftp.putfo(io.BytesIO(b"unprivileged"), f"{sftp_inbox.remote_inbox}/u.bin")
    assert (sftp_inbox.inbox_dir / "u.bin").stat().st_uid == me


# ---- SMTP ------------------------------------------------------------------------------


def test_smtp_captures_a_message(smtp_server, tmp_path):
    smtp_server.eml_dir = tmp_path / "mail"
    msg = EmailMessage()
    msg["From"] = "arb@sender.example"
    msg["To"] = "admin@viz.example, ops@viz.example"
    msg["Subject"] = "arb: partial backup failed — ñandú"
    msg.set_content("The partial backup for 2026-11-25T10:05 failed.\n")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as smtp:
        refused = smtp.send_message(msg)
    assert refused == {}
    (got,) = smtp_server.wait_for(1, timeout=5)
    assert got.mail_from == "arb@sender.example"
    assert got.rcpt_tos == ("admin@viz.example", "ops@viz.example")
    assert got.subject == "arb: partial backup failed — ñandú"
    assert got.body == "The partial backup for 2026-11-25T10:05 failed.\n"
    assert got.eml_path is not None and got.eml_path.parent == smtp_server.eml_dir
    assert b"partial backup for 2026-11-25T10:05 failed" in got.eml_path.read_bytes()


def test_smtp_wait_for_times_out_clearly(smtp_server):
    with pytest.raises(TimeoutError, match="received 0 message"):
        smtp_server.wait_for(1, timeout=0.1)
