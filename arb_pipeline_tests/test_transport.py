"""The transport interface (local folder and SFTP against a real sshd), and what only SFTP
can get wrong: host keys, key files, unreachable servers, stalls, kills and restarts.

Promise 3 (a backup is published atomically) and promise 5 (SFTP verifies host keys;
secrets never reach a message or a log)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from arb_pipeline.dev.ports import free_port
from arb_pipeline.dev.sshd import LocalSshd, _children
from arb_pipeline.transport.base import TransportError, check_relative, is_temporary_name
from arb_pipeline.transport.local import LocalFolderTransport
from arb_pipeline.transport.sftp import SftpTransport
from arb_pipeline_tests.support import slow_publish
from arb_pipeline_tests.support.ssh_keys import new_key


def make_sftp(server: LocalSshd, **overrides) -> SftpTransport:
    params = dict(
        host=server.host,
        port=server.port,
        username=server.username,
        key_file=server.client_key_path,
        known_hosts_file=server.known_hosts_path,
        remote_dir=server.remote_inbox,
        connect_timeout=5,
        io_timeout=10,
        retries=0,
        backoff=0.05,
    )
    params.update(overrides)
    return SftpTransport(**params)


def all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- the same interface tests for both transports ------------------------------------


@pytest.fixture(params=["local", pytest.param("sftp", marks=pytest.mark.sshd)])
def transport(request, tmp_path):
    """(transport, local path of its remote folder)."""
    if request.param == "local":
        folder = tmp_path / "inbox"
        t = LocalFolderTransport(folder)
    else:
        server = request.getfixturevalue("sftp_inbox")
        folder = server.inbox_dir
        t = make_sftp(server, retries=1)
    try:
        yield t, folder
    finally:
        t.close()  # LocalFolderTransport is no context manager


def test_publish_then_read_back(transport, tmp_path):
    t, folder = transport
    data = os.urandom(200_000)
    t.publish(write(tmp_path / "src.bin", data), "a.bin")
    assert t.read_bytes("a.bin") == data
    assert (folder / "a.bin").read_bytes() == data
    assert t.listdir() == ["a.bin"]


def test_publish_creates_nested_folders(transport, tmp_path):
    t, folder = transport
    src = write(tmp_path / "src.bin", b"nested")
    t.publish(src, "partial/2026-11-02/x/y.json.zst")
    t.publish(src, "partial/2026-11-02/x/z.json.zst")  # folders exist now
    assert (folder / "partial/2026-11-02/x/y.json.zst").read_bytes() == b"nested"
    assert t.listdir("partial/2026-11-02/x") == ["y.json.zst", "z.json.zst"]
    assert t.listdir("partial") == ["2026-11-02"]


def test_republish_overwrites(transport, tmp_path):
    t, folder = transport
    t.publish(write(tmp_path / "v1", b"version one, longer"), "f.json")
    t.publish(write(tmp_path / "v2", b"v2"), "f.json")
    assert t.read_bytes("f.json") == b"v2"
    assert (folder / "f.json").read_bytes() == b"v2"


def test_no_temporary_names_after_success(transport, tmp_path):
    t, folder = transport
    for i in range(5):
        t.publish(write(tmp_path / f"s{i}", os.urandom(1000 * i)), f"d{i % 2}/f{i}.bin")
    t.check_writable()
    assert all_files(folder) == ["d0/f0.bin", "d0/f2.bin", "d0/f4.bin", "d1/f1.bin", "d1/f3.bin"]
    assert not any(is_temporary_name(n) for n in t.listdir() + t.listdir("d0") + t.listdir("d1"))


def test_missing_things(transport, tmp_path):
    t, folder = transport
    assert t.listdir("no/such/folder") == []
    t.remove("no-such-file")  # missing is fine
    with pytest.raises(FileNotFoundError):
        t.read_bytes("no-such-file")
    t.publish(write(tmp_path / "s", b"x"), "gone.bin")
    t.remove("gone.bin")
    assert t.listdir() == []
    with pytest.raises(TransportError, match="nope.bin"):
        t.publish(tmp_path / "nope.bin", "x.bin")  # local file missing


@pytest.mark.parametrize("bad", ["../x", "/etc/x", "a/../../x", ""])
def test_names_may_not_leave_the_folder(transport, tmp_path, bad):
    t, folder = transport
    src = write(tmp_path / "s", b"x")
    with pytest.raises(TransportError, match="relative path"):
        check_relative(bad)
    with pytest.raises(TransportError, match="relative path"):
        t.publish(src, bad)
    if bad:  # listdir("") is the root itself
        for call in (t.read_bytes, t.remove, t.listdir):
            with pytest.raises(TransportError, match="relative path"):
                call(bad)
    assert not folder.exists() or all_files(folder) == []
    assert not (folder.parent / "x").exists()


def assert_not_retried(caplog):
    """A permanent failure is not retried: the transport logs each retry ("retry n/N")."""
    retries = [r.getMessage() for r in caplog.records if " retry " in r.getMessage()]
    assert retries == [], retries


# ---- SFTP: host keys, key files, settings ---------------------------------------------


@pytest.mark.sshd
def test_changed_host_key_is_refused_at_once(sftp_inbox, tmp_path, caplog):
    old_known_hosts = sftp_inbox.known_hosts_path.read_text()
    sftp_inbox.regenerate_host_key(update_known_hosts=False)
    try:
        assert sftp_inbox.known_hosts_path.read_text() == old_known_hosts
        t = make_sftp(sftp_inbox, retries=3, backoff=1.0)
        with pytest.raises(TransportError) as err:
            t.listdir()
        assert_not_retried(caplog)
        message = str(err.value)
        assert "CHANGED" in message and "man-in-the-middle" in message
        assert str(sftp_inbox.known_hosts_path) in message and "known_hosts_file" in message
        assert not list(sftp_inbox.inbox_dir.iterdir())
    finally:
        sftp_inbox.write_known_hosts()
    with make_sftp(sftp_inbox) as t:  # trusted again
        assert t.listdir() == []


@pytest.mark.sshd
def test_unknown_host_is_refused_never_added(sftp_inbox, tmp_path, caplog):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with make_sftp(sftp_inbox, known_hosts_file=empty, retries=3, backoff=1.0) as t:
        with pytest.raises(TransportError) as err:
            t.check_writable()
        assert_not_retried(caplog)
    message = str(err.value)
    assert str(empty) in message and "known_hosts_file" in message
    assert f"ssh-keyscan -p {sftp_inbox.port} {sftp_inbox.host} >> {empty}" in message
    assert "fingerprint" in message and "SHA256:" in message
    assert empty.read_text() == ""  # nothing auto-added

    missing = tmp_path / "no_known_hosts"
    with pytest.raises(TransportError, match="does not exist") as err:
        make_sftp(sftp_inbox, known_hosts_file=missing).listdir()
    assert str(missing) in str(err.value)


@pytest.mark.sshd
def test_key_file_missing_or_readable_by_others(sftp_inbox, tmp_path):
    missing = tmp_path / "no_key"
    with pytest.raises(TransportError, match="does not exist") as err:
        make_sftp(sftp_inbox, key_file=missing).listdir()
    assert str(missing) in str(err.value) and "key_file" in str(err.value)

    loose = tmp_path / "loose_key"
    shutil.copy(sftp_inbox.client_key_path, loose)
    os.chmod(loose, 0o644)
    with pytest.raises(TransportError) as err:
        make_sftp(sftp_inbox, key_file=loose, retries=3, backoff=1.0).listdir()
    message = str(err.value)
    assert str(loose) in message and "key_file" in message and f"chmod 600 {loose}" in message
    secret_lines = [line for line in loose.read_text().splitlines() if "PRIVATE KEY" not in line]
    assert secret_lines and not any(line in message for line in secret_lines)

    garbage = tmp_path / "garbage_key"
    garbage.write_text("not a key at all\n")
    os.chmod(garbage, 0o600)
    with pytest.raises(TransportError, match="can't be used") as err:
        make_sftp(sftp_inbox, key_file=garbage).listdir()
    assert "not a key at all" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # parser errors may quote the key


@pytest.mark.sshd
@pytest.mark.parametrize(
    "kind,passphrase", [("rsa", None), ("ecdsa", "s3cret-ecdsa-pass"), ("ed25519", "s3cret-ed-pass")]
)
def test_any_key_type_and_passphrases_never_shown(sftp_inbox, tmp_path, caplog, kind, passphrase):
    key_path = tmp_path / f"id_{kind}"
    public = new_key(kind, key_path, passphrase.encode() if passphrase else None)
    authorized = sftp_inbox.authorized_keys_path
    original = authorized.read_text()
    caplog.set_level(logging.DEBUG)
    try:
        with make_sftp(sftp_inbox, key_file=key_path, key_passphrase=passphrase, retries=3, backoff=1.0) as t:
            with pytest.raises(TransportError, match="refused the login") as err:
                t.listdir()  # not yet authorized
            assert_not_retried(caplog)
        assert sftp_inbox.username in str(err.value) and str(key_path) in str(err.value)
        authorized.write_text(original + public + "\n")
        with make_sftp(sftp_inbox, key_file=key_path, key_passphrase=passphrase) as t:
            t.publish(write(tmp_path / "s", kind.encode()), f"{kind}.txt")
            assert "s3cret" not in repr(t)
        assert (sftp_inbox.inbox_dir / f"{kind}.txt").read_bytes() == kind.encode()
        if passphrase:
            with pytest.raises(TransportError, match="key_passphrase") as err:
                make_sftp(sftp_inbox, key_file=key_path).listdir()
            with pytest.raises(TransportError, match="key_passphrase") as err2:
                make_sftp(sftp_inbox, key_file=key_path, key_passphrase="wrong-s3cret").listdir()
            for e in (err, err2):
                assert str(key_path) in str(e.value) and "s3cret" not in str(e.value)
            assert "does not decrypt" in str(err2.value)
        else:  # a passphrase for an unencrypted key is ignored, as ssh does
            with make_sftp(sftp_inbox, key_file=key_path, key_passphrase="unneeded-s3cret") as t:
                assert t.listdir() == [f"{kind}.txt"]
    finally:
        authorized.write_text(original)
    assert "s3cret" not in caplog.text


@pytest.mark.sshd
def test_unreachable_port_names_host_and_port(sftp_inbox):
    port = free_port()  # nothing listens there
    with pytest.raises(TransportError) as err:
        make_sftp(sftp_inbox, port=port, retries=2, backoff=0.05).listdir()
    message = str(err.value)
    assert f"{sftp_inbox.host}:{port}" in message and "sshd running" in message and "3 attempts" in message


@pytest.mark.sshd
def test_unwritable_remote_folder(sftp_inbox, tmp_path, caplog):
    with make_sftp(sftp_inbox, remote_dir="/", retries=3, backoff=1.0) as t:  # root-owned (chroot or not)
        with pytest.raises(TransportError, match="remote_dir") as err:
            t.check_writable()
        assert_not_retried(caplog)
    assert "folder / " in str(err.value) and "not writable" in str(err.value)

    readonly = sftp_inbox.inbox_dir / "readonly"
    readonly.mkdir()
    shutil.chown(readonly, sftp_inbox.username)
    readonly.chmod(0o555)
    remote_readonly = f"{sftp_inbox.remote_inbox}/readonly"  # /inbox/readonly when chrooted
    with make_sftp(sftp_inbox, remote_dir=remote_readonly, retries=3, backoff=1.0) as t:
        with pytest.raises(TransportError, match=remote_readonly) as err:
            t.check_writable()
        assert "remote_dir" in str(err.value)
        with pytest.raises(TransportError, match="permission denied"):
            t.publish(write(tmp_path / "s", b"x"), "sub/x.bin")
    assert list(readonly.iterdir()) == []

    with make_sftp(
        sftp_inbox, remote_dir=f"{sftp_inbox.remote_inbox}/new/deeper"
    ) as t:  # a missing folder is created
        t.check_writable()
    assert (sftp_inbox.inbox_dir / "new/deeper").is_dir()


# ---- SFTP: atomicity under load, kill, restart, stall -----------------------------------


@pytest.mark.sshd
def test_reader_never_sees_a_partial_file(sftp_inbox, tmp_path):
    size = 30 * 1024 * 1024
    src = write(tmp_path / "big.bin", os.urandom(size))
    seen_temp = []
    seen_final_sizes = []
    done = threading.Event()

    final = sftp_inbox.inbox_dir / "complete/big.bin"

    def poll():  # over SFTP, as the receiver would, and on the server's disk
        with make_sftp(sftp_inbox) as reader:
            while True:
                finished = done.is_set()
                for name in reader.listdir("complete"):
                    if is_temporary_name(name):
                        seen_temp.append(name)
                    elif name == "big.bin":
                        seen_final_sizes.append(final.stat().st_size)
                if "big.bin" in os.listdir(final.parent):
                    seen_final_sizes.append(final.stat().st_size)
                if finished:
                    return

    with make_sftp(sftp_inbox, progress=lambda sent, total: time.sleep(0.0003)) as t:
        t.publish(write(tmp_path / "first", b"x"), "complete/first.bin")  # the folder exists for the poller
        reader = threading.Thread(target=poll)
        reader.start()
        try:
            t.publish(src, "complete/big.bin")
        finally:
            done.set()
            reader.join(30)
    assert seen_final_sizes and set(seen_final_sizes) == {size}  # never a partial file under the final name
    assert seen_temp, "the reader never polled during the upload"
    assert (sftp_inbox.inbox_dir / "complete/big.bin").read_bytes() == src.read_bytes()
    assert sorted(os.listdir(sftp_inbox.inbox_dir / "complete")) == ["big.bin", "first.bin"]


@pytest.mark.sshd
def test_upload_killed_midway_leaves_no_final_file(sftp_inbox, tmp_path):
    size = 16 * 1024 * 1024
    src = write(tmp_path / "big.bin", os.urandom(size))
    cfg = dict(
        host=sftp_inbox.host,
        port=sftp_inbox.port,
        username=sftp_inbox.username,
        key_file=str(sftp_inbox.client_key_path),
        known_hosts_file=str(sftp_inbox.known_hosts_path),
        remote_dir=sftp_inbox.remote_inbox,
        local_path=str(src),
        remote_name="daily/big.bin",
        chunk_delay=0.01,
    )
    proc = subprocess.Popen([sys.executable, slow_publish.__file__, json.dumps(cfg)])
    daily = sftp_inbox.inbox_dir / "daily"
    try:
        deadline = time.monotonic() + 15
        while True:
            written = [p for p in daily.glob("*") if p.stat().st_size > 256 * 1024] if daily.exists() else []
            if written:  # mid-upload
                break
            assert proc.poll() is None, "the upload ended before it could be killed"
            assert time.monotonic() < deadline, "the upload did not start"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(daily)
    assert "big.bin" not in names
    assert names and all(is_temporary_name(n) for n in names)  # only the killed upload's leftover
    assert (daily / names[0]).stat().st_size < size

    with make_sftp(sftp_inbox) as t:  # rerun
        t.publish(src, "daily/big.bin")
        assert "big.bin" in t.listdir("daily")
    assert (daily / "big.bin").read_bytes() == src.read_bytes()


@pytest.mark.sshd
def test_publish_outlasts_an_sshd_restart(sftp_inbox, tmp_path, caplog):
    with make_sftp(sftp_inbox, retries=6, backoff=0.25) as t:
        t.publish(write(tmp_path / "a", b"before"), "before.bin")  # connected
        sftp_inbox.stop()  # kills the open session too
        restarted = []

        def restart():
            time.sleep(1.5)
            sftp_inbox.start()
            restarted.append(True)

        thread = threading.Thread(target=restart)
        thread.start()
        try:
            t.publish(write(tmp_path / "b", b"after"), "after.bin")
        finally:
            thread.join(20)
        assert restarted
        assert any(" retry " in r.getMessage() for r in caplog.records)  # it waited, then went on
    assert (sftp_inbox.inbox_dir / "after.bin").read_bytes() == b"after"
    assert sorted(os.listdir(sftp_inbox.inbox_dir)) == ["after.bin", "before.bin"]


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


@pytest.mark.sshd
def test_stalled_server_times_out_instead_of_hanging(sftp_inbox, tmp_path):
    t = make_sftp(sftp_inbox, io_timeout=1, retries=0)
    retrying = make_sftp(sftp_inbox, io_timeout=1, retries=1)
    t.listdir()
    retrying.listdir()
    sessions = _descendants(sftp_inbox.pid)  # the session processes of these two connections
    assert sessions
    try:
        for pid in sessions:
            os.kill(pid, signal.SIGSTOP)
        with pytest.raises(TransportError, match="io_timeout=1"):
            t.listdir()
        assert retrying.listdir() == []  # a new connection (a new session) answers
    finally:
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        t.close()
        retrying.close()


# -- key files any other user could touch, refused before any connection (no sshd needed) ----------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o602, 0o700, 0o611])
def test_a_key_file_any_other_user_could_read_or_change_is_refused_before_connecting(tmp_path, mode):
    key, link = tmp_path / "id_ed25519", tmp_path / "link_to_key"
    new_key("ed25519", key, b"k3y-pass")
    link.symlink_to(key)
    (tmp_path / "known_hosts").write_text("")
    os.chmod(key, mode)
    for path in (key, link):  # a symlink is judged by the file it points to
        transport = SftpTransport(
            "127.0.0.1",
            1,
            "arbsftp",
            path,
            tmp_path / "known_hosts",
            "/inbox",
            retries=0,
            key_passphrase="k3y-pass",
        )
        with pytest.raises(TransportError) as err:
            transport.listdir()
        message = str(err.value)
        if mode & 0o077:
            assert f"chmod 600 {path}" in message and "k3y-pass" not in message
        else:  # 0700 is the owner's alone: the key is read, and only the connection fails
            assert "cannot connect" in message and "chmod" not in message
