"""A real OpenSSH sshd on 127.0.0.1 for the demo and the tests: SFTP only, key only.

It runs deploy/sshd/arb-sftp.conf's options (``SFTP_ONLY_OPTIONS`` in a ``Match User``
block, as there; test_sshd_hardening checks they agree) and an ``authorized_keys`` line
with ``restrict,from=...`` as in authorized_keys.example. ``chroot`` picks the mode
(default: chrooted when run as root):

- **chrooted** (root; production's layout): a system user (default ``arbsftp``, password
  ``*``: key only, where ``!`` would mark it locked and sshd refuse it; shell nologin) and
  a chroot (default ``/srv/arb-sftp/<unique>``: sshd wants every component root-owned and
  not group/world-writable, so not under /tmp) holding ``inbox``, ``/inbox`` to clients.
- **unprivileged** (any other user): sshd runs as the current user, the only user it can
  let in. No chroot (that needs root): clients see the real file system, and
  ``remote_inbox`` is the absolute path of ``base_dir/inbox``. The rest is the same.

Config, keys (host and client, ed25519), known_hosts (``[127.0.0.1]:PORT``, so clients
verify the server: promise 5), pid file and log live in ``base_dir``, /tmp included.
The server is stopped by the PID in its pid file.

One module though over 400 lines (dev only): the config, keys, chroot and process are one
server's life cycle, tied together by ``LocalSshd``'s paths and settings.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from arb_pipeline.dev.ports import free_port
from arb_pipeline.errors import ArbError
from arb_pipeline.proc import process_alive

SSHD_BIN = Path("/usr/sbin/sshd")
DEFAULT_USER = "arbsftp"
DEFAULT_CHROOT_BASE = Path("/srv/arb-sftp")
INSTALL_HINT = "install it with `apt-get install openssh-server` (Debian/Ubuntu)"

# The ``Match User`` block of deploy/sshd/arb-sftp.conf minus the site's paths
# (AuthorizedKeysFile, ChrootDirectory). `-P` refuses symlink/hardlink requests: the sender
# never needs them, and a link in the inbox could point the receiver at another file.
SFTP_ONLY_OPTIONS: tuple[tuple[str, str], ...] = (
    ("ForceCommand", "internal-sftp -u 0007 -P symlink,hardlink"),
    ("AuthenticationMethods", "publickey"),
    ("PasswordAuthentication", "no"),
    ("PermitTTY", "no"),
    ("AllowTcpForwarding", "no"),
    ("AllowAgentForwarding", "no"),
    ("AllowStreamLocalForwarding", "no"),
    ("X11Forwarding", "no"),
    ("PermitTunnel", "no"),
)
# authorized_keys.example's options: no forwarding, PTY, user rc or X11; only from the sender.
AUTHORIZED_KEY_OPTIONS = 'restrict,from="{address}"'


class ServiceError(ArbError):
    """A local service could not be set up or started; the message says how to fix it."""


def sshd_installed(sshd_bin: Path = SSHD_BIN) -> bool:
    """True when the OpenSSH server binary is present and executable."""
    return sshd_bin.is_file() and os.access(sshd_bin, os.X_OK)


def sshd_unavailable_reason(sshd_bin: Path = SSHD_BIN, *, chroot: bool = False) -> str | None:
    """Why ``LocalSshd`` can't run here (None when it can): sshd missing, or a chroot without root."""
    if not sshd_installed(sshd_bin):
        return f"OpenSSH sshd not found at {sshd_bin}: {INSTALL_HINT}"
    if chroot and os.geteuid() != 0:
        return (
            "the chrooted sshd needs root (ChrootDirectory and useradd); run as root, or use "
            "LocalSshd(chroot=False), the unprivileged mode without a chroot"
        )
    return None


def require_sshd(sshd_bin: Path = SSHD_BIN, *, chroot: bool = False) -> None:
    """Raise ``ServiceError`` naming the fix when ``LocalSshd`` can't run here."""
    reason = sshd_unavailable_reason(sshd_bin, chroot=chroot)
    if reason:
        raise ServiceError(reason)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file with ``mode`` from the start (no window where a key is world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def generate_ed25519_key(private_path: Path, comment: str) -> str:
    """Write an OpenSSH-format ed25519 private key (0600) and its ``.pub``; return the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    _write_private(private_path, private)
    line = f"{public} {comment}"
    Path(f"{private_path}.pub").write_text(line + "\n")
    return line


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):
            found.append(int(stat_file.parent.name))
    return found


def _check_chroot_path(path: Path) -> None:
    """sshd's own rule: every component of the chroot is root-owned and not group/world writable."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ServiceError(
                f"chroot folder {path} can't be used: its component {part} is owned by uid {st.st_uid} "
                f"with mode {stat.filemode(st.st_mode)}; sshd needs every component owned by root and not "
                f"writable by group or others (so not under /tmp). Pick another chroot_dir, e.g. under "
                f"{DEFAULT_CHROOT_BASE}"
            )


def _default_chroot() -> Path:
    return DEFAULT_CHROOT_BASE / f"{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class LocalSshd:
    """An SFTP-only OpenSSH server: ``start()``, ``stop()``, ``regenerate_host_key()``, ``cleanup()``.

    ``base_dir`` holds sshd_config, keys, known_hosts, authorized_keys, the pid file and the
    log. ``inbox_dir`` is the local path of ``remote_inbox`` as a client sees it: chrooted,
    ``chroot_dir/inbox`` seen as ``/inbox``; unprivileged, ``base_dir/inbox`` seen as itself.
    ``chroot=None`` means chrooted when running as root.
    """

    base_dir: Path
    chroot_dir: Path = field(default_factory=_default_chroot)
    username: str = ""  # default: DEFAULT_USER chrooted, the current user unprivileged
    host: str = "127.0.0.1"
    port: int = 0
    sshd_bin: Path = SSHD_BIN
    start_timeout: float = 10.0
    chroot: bool | None = None
    _created_chroot: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        self.chroot_dir = Path(self.chroot_dir)
        self.sshd_bin = Path(self.sshd_bin)
        if self.chroot is None:
            self.chroot = os.geteuid() == 0
        if not self.chroot and os.geteuid() == 0:
            raise ServiceError(
                "LocalSshd(chroot=False) runs sshd as the user it lets in, and root logins are "
                "refused: run it as an unprivileged user, or as root with chroot=True"
            )
        me = pwd.getpwuid(os.geteuid()).pw_name
        self.username = self.username or (DEFAULT_USER if self.chroot else me)
        if not self.chroot and self.username != me:
            raise ServiceError(
                f"an unprivileged sshd can only let in the user it runs as ({me!r}), not "
                f"{self.username!r}: leave username empty, or run as root with chroot=True"
            )

    # ---- paths -------------------------------------------------------------------
    @property
    def inbox_dir(self) -> Path:
        return self.chroot_dir / "inbox" if self.chroot else self.base_dir / "inbox"

    @property
    def remote_inbox(self) -> str:
        """The inbox as SFTP clients name it (``ARB_SFTP_REMOTE_DIR``)."""
        return "/inbox" if self.chroot else str(self.inbox_dir)

    @property
    def config_path(self) -> Path:
        return self.base_dir / "sshd_config"

    @property
    def host_key_path(self) -> Path:
        return self.base_dir / "ssh_host_ed25519_key"

    @property
    def client_key_path(self) -> Path:
        return self.base_dir / "client_ed25519_key"

    @property
    def authorized_keys_path(self) -> Path:
        return self.base_dir / "authorized_keys"

    @property
    def known_hosts_path(self) -> Path:
        return self.base_dir / "known_hosts"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "sshd.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "sshd.log"

    @property
    def pid(self) -> int | None:
        """PID of the running sshd (from its pid file), or None when it isn't running."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if process_alive(pid) else None

    @property
    def host_key_line(self) -> str:
        """``ssh-ed25519 AAAA...`` of the current host key."""
        return " ".join(Path(f"{self.host_key_path}.pub").read_text().split()[:2])

    # ---- setup -------------------------------------------------------------------
    def _ensure_user(self) -> pwd.struct_passwd:
        try:
            entry = pwd.getpwnam(self.username)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "-m", "-s", "/usr/sbin/nologin", "-p", "*", self.username],
                check=True,
                capture_output=True,
                text=True,
            )
            return pwd.getpwnam(self.username)
        # With UsePAM no, sshd refuses an account whose password field starts with '!' (locked).
        for line in Path("/etc/shadow").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == self.username and rest.startswith("!"):
                raise ServiceError(
                    f"user {self.username!r} is locked (password field starts with '!'), so sshd refuses it; "
                    f"unlock it for key-only login with `usermod -p '*' {self.username}`"
                )
        return entry

    def _prepare_chroot(self, user: pwd.struct_passwd) -> None:
        if str(self.chroot_dir).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
            raise ServiceError(
                f"chroot folder {self.chroot_dir} is under a world-writable folder; sshd refuses "
                f"that. Use e.g. {DEFAULT_CHROOT_BASE}/<name>"
            )
        existing = next(p for p in [self.chroot_dir, *self.chroot_dir.parents] if p.exists())
        _check_chroot_path(existing)  # before creating anything below it
        if existing != self.chroot_dir:
            self._created_chroot = True
        for part in reversed([self.chroot_dir, *self.chroot_dir.parents]):
            if not part.exists():
                part.mkdir(mode=0o755)
                os.chown(part, 0, 0)
                os.chmod(part, 0o755)  # whatever the umask
        _check_chroot_path(self.chroot_dir)
        self.inbox_dir.mkdir(mode=0o755, exist_ok=True)
        os.chown(self.inbox_dir, user.pw_uid, user.pw_gid)

    def _prepare_base(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # sshd reads authorized_keys as the sftp user: it must be able to traverse to it
        # (tempfile.mkdtemp makes 0700 folders). Only search permission is added.
        for folder in [self.base_dir, *self.base_dir.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXOTH)

    def write_known_hosts(self) -> Path:
        """Trust the current host key for ``[host]:port`` (and only that)."""
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {self.host_key_line}\n")
        return self.known_hosts_path

    def config_text(self) -> str:
        """The sshd_config this server runs: loopback only, then deploy/sshd/arb-sftp.conf's block."""
        match_block = [f"AuthorizedKeysFile {self.authorized_keys_path}"]
        if self.chroot:
            match_block.append(f"ChrootDirectory {self.chroot_dir}")
        match_block += [f"{name} {value}" for name, value in SFTP_ONLY_OPTIONS]
        indented = "".join(f"    {line}\n" for line in match_block)
        return f"""\
# Written by arb_pipeline.dev.sshd: SFTP only, key only, loopback only{", chrooted" if self.chroot else ""}.
Port {self.port}
ListenAddress {self.host}
AddressFamily inet
HostKey {self.host_key_path}
PidFile {self.pid_file}
# base_dir may sit under /tmp (world-writable), which StrictModes would refuse.
StrictModes no
UsePAM no
PubkeyAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin no
AllowUsers {self.username}
MaxAuthTries 3
LoginGraceTime 30
PermitUserEnvironment no
PermitUserRC no
LogLevel VERBOSE
Subsystem sftp internal-sftp
# The production options, as in deploy/sshd/arb-sftp.conf.
Match User {self.username}
{indented}"""

    def _setup(self, *, trust_host_key: bool = True) -> None:
        require_sshd(self.sshd_bin, chroot=bool(self.chroot))
        if self.chroot:
            user = self._ensure_user()
            self._prepare_base()
            self._prepare_chroot(user)
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # privilege separation folder
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self.inbox_dir.mkdir(mode=0o755, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if not self.host_key_path.exists():
            generate_ed25519_key(self.host_key_path, f"arb-sshd@{self.host}")
        if not self.client_key_path.exists():
            generate_ed25519_key(self.client_key_path, f"arb-client@{self.host}")
        client_pub = " ".join(Path(f"{self.client_key_path}.pub").read_text().split()[:2])
        self.authorized_keys_path.write_text(
            f"{AUTHORIZED_KEY_OPTIONS.format(address=self.host)} {client_pub}\n"
        )
        os.chmod(self.authorized_keys_path, 0o644)
        if trust_host_key or not self.known_hosts_path.exists():
            self.write_known_hosts()
        self.config_path.write_text(self.config_text())

    # ---- lifecycle ---------------------------------------------------------------
    def start(self, *, trust_host_key: bool = True) -> "LocalSshd":
        """Set up what is missing and start sshd; ``trust_host_key`` rewrites known_hosts for its key."""
        if self.pid is not None:
            return self
        self._setup(trust_host_key=trust_host_key)
        check = subprocess.run(
            [str(self.sshd_bin), "-t", "-f", str(self.config_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise ServiceError(f"sshd refused its config {self.config_path}: {check.stderr.strip()}")
        self.pid_file.unlink(missing_ok=True)
        # sshd daemonizes; the daemon writes the pid file once it listens.
        subprocess.run(
            [str(self.sshd_bin), "-f", str(self.config_path), "-E", str(self.log_file)],
            check=True,
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
        )
        deadline = time.monotonic() + self.start_timeout
        while self.pid is None:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"sshd did not start on {self.host}:{self.port} within {self.start_timeout:.0f} s; "
                    f"its log {self.log_file} ends with: {self._log_tail()}"
                )
            time.sleep(0.01)
        return self

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_file.read_text().splitlines()[-lines:]) or "(empty)"
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the PID in the pid file and wait until it has exited.

        sshd leaves open sessions running when its listener stops, so the session processes
        it forked (its direct children) get SIGTERM too.
        """
        pid = self.pid
        if pid is None:
            return
        pids = [pid, *_children(pid)]
        for each in pids:
            try:
                os.kill(each, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(process_alive(each) for each in pids):
            if time.monotonic() > deadline:
                raise ServiceError(f"sshd (pid {pid}) did not exit {timeout:.0f} s after SIGTERM")
            time.sleep(0.01)
        self.pid_file.unlink(missing_ok=True)

    def restart(self) -> "LocalSshd":
        self.stop()
        return self.start()

    def regenerate_host_key(self, *, update_known_hosts: bool = True) -> str:
        """Give the server a new host key and restart it on the same port; return the new key line.

        With ``update_known_hosts=False`` the known_hosts file keeps the old key, so clients
        using it must refuse the server (what a changed host key looks like).
        """
        self.stop()
        line = generate_ed25519_key(self.host_key_path, f"arb-sshd@{self.host}")
        self.start(trust_host_key=update_known_hosts)
        return line

    def cleanup(self) -> None:
        """Stop, and remove the chroot if this object created it (uploaded files included)."""
        self.stop()
        if self._created_chroot and self.chroot_dir.exists():
            shutil.rmtree(self.chroot_dir)

    # ---- client convenience --------------------------------------------------------
    def connect(self, *, known_hosts: Path | None = None, timeout: float = 10.0):
        """A connected ``paramiko.SSHClient`` that verifies the host key (RejectPolicy)."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                key_filename=str(self.client_key_path),
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client
