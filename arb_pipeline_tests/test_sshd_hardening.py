"""The SFTP user of deploy/sshd may do SFTP into its chroot and nothing else.

The first test checks, with sshd's own effective-config output (``sshd -T``), that the
server the suite runs (``LocalSshd``) has the options of ``deploy/sshd/arb-sftp.conf`` and
its ``authorized_keys`` line those of ``authorized_keys.example``; it runs as any user. The
others (marker ``needs_root``) need root, because only root can chroot: ``.ci/run`` runs
them as root, the rest of the suite as an unprivileged user. They attack a chrooted
server set up like production: a shell, a PTY, forwarding, links, reading and writing
outside the inbox, the key from another address.
"""

from __future__ import annotations

import grp
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from arb_pipeline.dev.sshd import (
    AUTHORIZED_KEY_OPTIONS,
    SFTP_ONLY_OPTIONS,
    SSHD_BIN,
    LocalSshd,
    generate_ed25519_key,
    sshd_unavailable_reason,
)
from arb_pipeline_tests.support.services import services_required

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "sshd"
SITE_PATHS = {"authorizedkeysfile", "chrootdirectory"}  # the only lines a site (or the tests) changes
REFUSAL = "This service allows sftp connections only."


def _require(reason: str | None, required: bool) -> None:
    if reason:
        if required:
            pytest.fail(f"required here but unavailable: {reason}")
        pytest.skip(reason)


def match_block(config: str) -> list[tuple[str, str]]:
    """(option, value) lines of the config's ``Match`` block, in order."""
    lines = [line.strip() for line in config.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Match "))
    return [tuple(line.split(None, 1)) for line in lines[start + 1 :] if line and not line.startswith("#")]


def effective(config: Path, user: str, addr: str = "127.0.0.1") -> dict[str, str]:
    """sshd's effective settings for a connection of ``user`` from ``addr`` (``sshd -T``)."""
    out = subprocess.run(
        [str(SSHD_BIN), "-T", "-f", str(config), "-C", f"user={user},host=sender,addr={addr}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.sshd
def test_the_tested_sshd_runs_the_documented_options(tmp_path):
    _require(sshd_unavailable_reason(), services_required())
    deploy_text = (DEPLOY / "arb-sftp.conf").read_text()
    deploy_block = match_block(deploy_text)
    assert [o for o in deploy_block if o[0].lower() not in SITE_PATHS] == list(SFTP_ONLY_OPTIONS)
    assert {o[0].lower() for o in deploy_block} >= SITE_PATHS

    host_key = tmp_path / "host_key"
    generate_ed25519_key(host_key, "deploy-check")
    deploy_config = tmp_path / "deploy_sshd_config"
    deploy_config.write_text(f"HostKey {host_key}\nUsePAM no\n{deploy_text}")
    documented = effective(deploy_config, "arbsftp")
    assert documented["chrootdirectory"] == "/srv/arb-sftp" and documented["permittty"] == "no"
    assert effective(deploy_config, "someone-else")["forcecommand"] == "none"  # the block is the user's only

    # Root can build only the chrooted server; another user both (the chrooted one is only written here).
    modes = [True] if os.geteuid() == 0 else [True, False]
    for chroot in modes:
        server = LocalSshd(tmp_path / f"chroot-{chroot}", chroot=chroot, port=2222)
        server.base_dir.mkdir()
        generate_ed25519_key(server.host_key_path, "tested")
        server.config_path.write_text(server.config_text())
        tested = effective(server.config_path, server.username)
        for option in {name.lower() for name, _ in deploy_block} - SITE_PATHS:
            assert tested[option] == documented[option], (chroot, option)
        assert tested["chrootdirectory"] == (str(server.chroot_dir) if chroot else "none")
        assert tested["authorizedkeysfile"] == str(server.authorized_keys_path)
        assert (tested["permitrootlogin"], tested["listenaddress"]) == ("no", f"127.0.0.1:{server.port}")

    example = next(
        line
        for line in (DEPLOY / "authorized_keys.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example.split()[0] == AUTHORIZED_KEY_OPTIONS.format(address="203.0.113.10")


# ---- the chrooted server, as root ------------------------------------------------------


@pytest.fixture(scope="module")
def chrooted() -> Iterator[LocalSshd]:
    """A chrooted server whose inbox is set up like production's: setgid, shared with a group."""
    # .ci/run's root phase sets ARB_REQUIRE_SSHD_CHROOT: there a skip would hide a broken chroot.
    required = os.environ.get("ARB_REQUIRE_SSHD_CHROOT", "") not in ("", "0") or (
        os.geteuid() == 0 and services_required()
    )
    _require(sshd_unavailable_reason(chroot=True), required)
    base = Path(tempfile.mkdtemp(prefix="arb-sshd-chroot-"))
    server = LocalSshd(base, chroot=True)
    try:
        server.start()
        # Production: `install -d -o arbsftp -g arb -m 2770` (here the group is nogroup's id).
        os.chown(server.inbox_dir, -1, _loader_gid())
        os.chmod(server.inbox_dir, 0o2770)
        secret = base / "secret.txt"  # outside the chroot, readable by anyone who can reach it
        secret.write_text("outside the chroot\n")
        secret.chmod(0o644)
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _loader_gid() -> int:
    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534


@pytest.fixture
def sftp_root(chrooted) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session of the sender's key, with an emptied inbox."""
    for child in chrooted.inbox_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with chrooted.connect() as client, client.open_sftp() as sftp:
        yield sftp


def openssh(
    server: LocalSshd, program: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """The OpenSSH ``ssh`` or ``sftp`` client with the sender's key and strict host-key checking."""
    port_flag = "-p" if program == "ssh" else "-P"
    return subprocess.run(
        [
            program,
            "-F",
            "none",
            "-i",
            str(server.client_key_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={server.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            port_flag,
            str(server.port),
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.needs_root
def test_no_shell_no_command_no_pty(chrooted):
    login = f"{chrooted.username}@{chrooted.host}"
    for command in (["id"], ["/bin/sh", "-c", "cat /etc/passwd"], ["internal-sftp"]):
        done = openssh(chrooted, "ssh", login, *command)
        assert done.returncode == 1, done
        assert REFUSAL in done.stdout and "uid=" not in done.stdout and "root:" not in done.stdout
    shell = openssh(chrooted, "ssh", "-tt", login, stdin="id\nexit\n")
    assert "PTY allocation request failed" in shell.stderr and "uid=" not in shell.stdout
    with chrooted.connect() as client:
        with pytest.raises(paramiko.SSHException):
            client.invoke_shell()
        sftp = client.open_sftp()  # the same connection may do SFTP: the refusals above were no fluke
        assert sftp.listdir("/") == ["inbox"]


@pytest.mark.needs_root
def test_no_forwarding_of_any_kind(chrooted):
    with chrooted.connect() as client:
        transport = client.get_transport()
        with pytest.raises(paramiko.ChannelException):  # ssh -L: "administratively prohibited"
            transport.open_channel(
                "direct-tcpip", (chrooted.host, chrooted.port), ("127.0.0.1", 0), timeout=10
            )
        with pytest.raises(paramiko.SSHException):  # ssh -R
            transport.request_port_forward("127.0.0.1", 0)
        assert transport.is_active()
    # The OpenSSH client's stdio forwarding (ssh -W, as ProxyJump uses) is refused the same way.
    done = openssh(
        chrooted,
        "ssh",
        "-W",
        f"{chrooted.host}:{chrooted.port}",
        f"{chrooted.username}@{chrooted.host}",
        stdin="",
    )
    assert done.returncode == 255 and "administratively prohibited" in done.stderr, done


@pytest.mark.needs_root
def test_the_client_sees_only_its_inbox(sftp_root, chrooted):
    assert sftp_root.listdir("/") == ["inbox"]
    assert sftp_root.listdir("/../..") == ["inbox"]
    assert sftp_root.normalize("/inbox/../..") == "/"
    for outside in ("/etc/passwd", str(chrooted.base_dir / "secret.txt"), "/inbox/../../etc/passwd"):
        with pytest.raises(FileNotFoundError):
            sftp_root.stat(outside)
    # A link that someone else left in the inbox resolves inside the chroot, so it leads nowhere.
    secret = chrooted.base_dir / "secret.txt"
    (chrooted.inbox_dir / "link").symlink_to(secret)
    assert secret.read_text() == "outside the chroot\n" and secret.stat().st_mode & 0o004
    with pytest.raises(FileNotFoundError):
        sftp_root.open("/inbox/link").read()


@pytest.mark.needs_root
def test_nothing_outside_the_inbox_is_writable(sftp_root, chrooted):
    sftp_root.putfo(io.BytesIO(b"in"), "/inbox/in.bin")
    for attempt in (
        lambda: sftp_root.putfo(io.BytesIO(b"x"), "/outside.bin"),
        lambda: sftp_root.mkdir("/folder"),
        lambda: sftp_root.posix_rename("/inbox/in.bin", "/moved.bin"),
        lambda: sftp_root.rename("/inbox/in.bin", "/moved.bin"),
        lambda: sftp_root.rmdir("/inbox"),
        lambda: sftp_root.chmod("/", 0o777),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert sorted(os.listdir(chrooted.chroot_dir)) == ["inbox"]
    assert os.listdir(chrooted.inbox_dir) == ["in.bin"]


@pytest.mark.needs_root
def test_links_are_refused(sftp_root, chrooted):
    sftp_root.putfo(io.BytesIO(b"data"), "/inbox/a.bin")
    with pytest.raises(PermissionError):
        sftp_root.symlink("/inbox/a.bin", "/inbox/soft.bin")
    # paramiko has no hard-link call; the OpenSSH client's `ln` sends hardlink@openssh.com.
    done = openssh(
        chrooted,
        "sftp",
        "-b",
        "-",
        f"{chrooted.username}@{chrooted.host}",
        stdin="-ln /inbox/a.bin /inbox/hard.bin\n-ln -s /inbox/a.bin /inbox/soft.bin\nls /inbox\n",
    )
    assert done.returncode == 0, done
    assert "Server does not support hardlink@openssh.com" in done.stderr, done.stderr  # not even offered
    assert 'symlink file "/inbox/a.bin" to "/inbox/soft.bin": Permission denied' in done.stderr, done.stderr
    assert os.listdir(chrooted.inbox_dir) == ["a.bin"]
    assert (chrooted.inbox_dir / "a.bin").stat().st_nlink == 1


@pytest.mark.needs_root
def test_uploads_belong_to_the_sftp_user_and_the_loader_group(sftp_root, chrooted):
    sftp_root.mkdir("/inbox/partial")
    sftp_root.putfo(io.BytesIO(b"backup"), "/inbox/partial/x.bin")
    folder, upload = chrooted.inbox_dir / "partial", chrooted.inbox_dir / "partial/x.bin"
    sftp_user = pwd.getpwnam(chrooted.username)
    for path, mode in ((folder, 0o2770), (upload, 0o660)):  # umask 0007 + the inbox's setgid bit
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (sftp_user.pw_uid, _loader_gid()), path
        assert st.st_mode & 0o7777 == mode, (path, oct(st.st_mode))


@pytest.mark.needs_root
def test_the_key_works_only_from_the_senders_address(chrooted):
    assert chrooted.authorized_keys_path.read_text().startswith('restrict,from="127.0.0.1" ssh-ed25519 ')
    with chrooted.connect() as client:  # from 127.0.0.1
        assert client.open_sftp().listdir("/inbox") is not None
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))  # another source address on the loopback network
    sock.connect((chrooted.host, chrooted.port))
    client = paramiko.SSHClient()
    client.load_host_keys(str(chrooted.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with client, pytest.raises(paramiko.AuthenticationException):
        client.connect(
            chrooted.host,
            port=chrooted.port,
            username=chrooted.username,
            sock=sock,
            key_filename=str(chrooted.client_key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
