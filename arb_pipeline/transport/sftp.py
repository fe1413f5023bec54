"""SFTP behind the transport interface (paramiko; no dagster-ssh).

Safe by default (promise 5): the server's host key must already be in the configured
known_hosts file (``RejectPolicy``, never auto-added; no ssh-agent, no ``~/.ssh`` keys), and
the private key file must be private to its owner (like OpenSSH's own check).

All or nothing (promise 3): ``publish`` uploads to a temporary name in the final folder
(``.<name>.<random>.part``), checks the uploaded size and then ``posix_rename``\\ s it onto the
final name, which atomically replaces an older file. A reader of the folder sees the old
file or the whole new one under the final name, never a partial one.

Transient failures (connection refused/reset, EOF, timeouts, SSH protocol errors) are retried
with exponential backoff on a new connection; an answer from the server (authentication
refused, unknown or changed host key, permission denied, no such file) fails at once. Every
read and write on the SFTP channel has a timeout, so a stalled connection raises instead of
hanging.

Error messages name the setting involved (``host``/``port``, ``username``, ``key_file``,
``known_hosts_file``, ``remote_dir``) and the fix. They never contain the key's content or
its passphrase.
"""

from __future__ import annotations

import base64
import errno
import logging
import os
import posixpath
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import paramiko

from arb_pipeline.transport.base import TransportError, check_relative, temporary_name

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF = 60.0


class RemoteFileNotFoundError(TransportError, FileNotFoundError):
    """A remote file does not exist (also a ``FileNotFoundError``, like the local transport's)."""


class _Permanent(TransportError):
    """A failure retrying can't fix (bad setting, refused login, host key, permissions)."""


class _UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts (raised by ``_RejectUnknownHost``)."""

    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"host key for {hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class _RejectUnknownHost(paramiko.RejectPolicy):
    """``RejectPolicy`` with an exception that carries the offered key, for a useful message."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(hostname, key)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint (what ``ssh-keygen -lf`` prints)."""
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


_TRANSIENT_TYPES = (
    EOFError,
    TimeoutError,  # socket.timeout is TimeoutError since Python 3.10
    ConnectionError,  # refused, reset, aborted, broken pipe
    paramiko.ssh_exception.NoValidConnectionsError,
    socket.gaierror,
)
_PERMANENT_SSH_TYPES = (
    paramiko.AuthenticationException,
    paramiko.BadHostKeyException,
    _UnknownHostKey,
)


class SftpTransport:
    """Files in ``remote_dir`` on an SFTP server, published atomically.

    One connection is opened on first use and reused; ``close()`` (or leaving a ``with``
    block) releases it. Calls are serialized by a lock, so an instance may be shared by
    threads.

    ``retries`` is the number of extra attempts after the first; the wait before retry *n*
    is ``backoff * 2**(n-1)`` seconds (capped at 60). ``io_timeout`` bounds every wait for
    the server during a transfer; ``connect_timeout`` bounds TCP connect, banner and login.
    ``progress(sent, total)``, if given, is called while uploading.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        key_file: Path | str,
        known_hosts_file: Path | str,
        remote_dir: str,
        connect_timeout: float = 10,
        io_timeout: float = 30,
        retries: int = 4,
        backoff: float = 1.0,
        *,
        key_passphrase: str | None = None,
        keepalive_interval: int = 15,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.host = host
        self.port = int(port)
        self.username = username
        self.key_file = Path(key_file).expanduser()
        self.known_hosts_file = Path(known_hosts_file).expanduser()
        self.remote_dir = (remote_dir.rstrip("/") or "/") if remote_dir else "."
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.keepalive_interval = keepalive_interval
        self.progress = progress
        self.__passphrase = key_passphrase  # name-mangled; never in repr, logs or messages
        self._key: paramiko.PKey | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._known_dirs: set[str] = set()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (
            f"SftpTransport({self.username}@{self.host}:{self.port}, remote_dir={self.remote_dir!r}, "
            f"key_file={str(self.key_file)!r}, known_hosts_file={str(self.known_hosts_file)!r})"
        )

    # ---- context manager -------------------------------------------------------------
    def __enter__(self) -> "SftpTransport":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- names -----------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _remote_path(self, remote_name: str) -> str:
        return posixpath.join(self.remote_dir, *check_relative(remote_name).parts)

    # ---- key and host key ------------------------------------------------------------
    def _load_key(self) -> paramiko.PKey:
        if self._key is not None:
            return self._key
        path = self.key_file
        fix = "set key_file to the SFTP client's private key (an OpenSSH or PEM key file, mode 600)"
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _Permanent(
                f"the SFTP private key file {path} (key_file setting) does not exist: {fix}"
            ) from None
        except OSError as exc:
            raise _Permanent(
                f"the SFTP private key file {path} (key_file setting) can't be read ({exc.strerror}): {fix}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise _Permanent(
                f"the SFTP private key file {path} (key_file setting) is not a regular file: {fix}"
            )
        if os.name == "posix" and st.st_mode & 0o077:
            raise _Permanent(
                f"the SFTP private key file {path} (key_file setting) has mode "
                f"{stat.S_IMODE(st.st_mode):04o}: "
                f"it is readable or writable by group/others, so it is refused (as ssh does). "
                f"Fix: `chmod 600 {path}` (and make sure the pipeline's user owns it)"
            )
        if not os.access(path, os.R_OK):
            raise _Permanent(
                f"the SFTP private key file {path} (key_file setting) is not readable by this user "
                f"(uid {os.getuid()}): make the pipeline's user its owner and `chmod 600 {path}`"
            )
        # Errors while parsing are reported by type only, and without their cause: some
        # parser exceptions carry the key's bytes.
        passphrase = self.__passphrase or None
        encrypted_hint = "it is encrypted: set key_passphrase (from the environment) to its passphrase"
        try:
            key = self._parse_key(path, passphrase)
        except paramiko.PasswordRequiredException:
            reason = encrypted_hint
        except paramiko.UnknownKeyType:
            reason = "its key type is not supported: use an Ed25519, ECDSA or RSA key"
        except (TypeError, ValueError, paramiko.SSHException) as exc:
            text = str(exc).lower()
            if passphrase is None and ("password" in text or "encrypted" in text):
                reason = encrypted_hint
            elif passphrase is not None:
                reason = (
                    "the key_passphrase setting does not decrypt it (or it is not an OpenSSH or PEM "
                    "Ed25519, ECDSA or RSA private key)"
                )
            else:
                reason = (
                    f"it is not a private key paramiko can read ({type(exc).__name__}); "
                    "use an OpenSSH or PEM Ed25519, ECDSA or RSA private key"
                )
        except OSError as exc:
            reason = f"it can't be read ({exc.strerror})"
        else:
            self._key = key
            return key
        raise _Permanent(
            f"the SFTP private key file {path} (key_file setting) can't be used: {reason}"
        ) from None

    @staticmethod
    def _parse_key(path: Path, passphrase: str | None) -> paramiko.PKey:
        """Any key type paramiko knows (``PKey.from_path``), with the passphrase as bytes.

        paramiko 5.1 hands the password to ``cryptography`` as given, which wants bytes. A
        passphrase set for an unencrypted key is ignored, as ssh does.
        """
        if passphrase is None:
            return paramiko.PKey.from_path(path)
        try:
            return paramiko.PKey.from_path(path, password=passphrase.encode())
        except TypeError as exc:
            if "not encrypted" not in str(exc):
                raise
            log.warning("key_passphrase is set but the key file %s is not encrypted; ignoring it", path)
            return paramiko.PKey.from_path(path)

    def _keyscan_hint(self) -> str:
        return (
            f"`ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts_file}` and check that the "
            f"fingerprint it adds (`ssh-keygen -lf {self.known_hosts_file}`) matches the server's "
            f"(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the server)"
        )

    # ---- connection ------------------------------------------------------------------
    def _connected(self) -> bool:
        if self._sftp is None or self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active() and not self._sftp.get_channel().closed

    def _disconnect(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        self._known_dirs.clear()
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass

    def _connect(self) -> paramiko.SFTPClient:
        if self._connected():
            return self._sftp
        self._disconnect()
        key = self._load_key()
        client = paramiko.SSHClient()
        try:
            try:
                client.load_host_keys(str(self.known_hosts_file))
            except FileNotFoundError:
                raise _Permanent(
                    f"the known_hosts file {self.known_hosts_file} (known_hosts_file setting) does not "
                    f"exist; host keys are only trusted from it. Create it with the server's key: "
                    f"{self._keyscan_hint()}"
                ) from None
            except (OSError, paramiko.SSHException) as exc:
                raise _Permanent(
                    f"the known_hosts file {self.known_hosts_file} (known_hosts_file setting) "
                    f"can't be read: {exc}"
                ) from None
            client.set_missing_host_key_policy(_RejectUnknownHost())
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
            )
            transport = client.get_transport()
            if self.keepalive_interval:
                transport.set_keepalive(self.keepalive_interval)
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.io_timeout)  # a stalled server raises, not hangs
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        return sftp

    # ---- errors and retries ----------------------------------------------------------
    def _is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, (TransportError, *_PERMANENT_SSH_TYPES)):
            return False
        if isinstance(exc, _TRANSIENT_TYPES):
            return True
        if isinstance(exc, paramiko.SSHException):
            return True
        if isinstance(exc, OSError):
            # An SFTP status (permission denied, no such file, failure) on a live connection is
            # the server's answer; the same error with the connection gone is a network failure.
            return (
                exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS)
                and not self._connected()
            )
        return False

    def _explain(self, exc: BaseException, action: str, connecting: bool) -> str:
        """A message naming the setting and the fix for an error from paramiko or the server."""
        if isinstance(exc, TransportError):
            return str(exc)
        if isinstance(exc, paramiko.BadHostKeyException):
            return (
                f"the host key of the SFTP server {self._where} has CHANGED since it was recorded in the "
                f"known_hosts file {self.known_hosts_file} (known_hosts_file setting): it offered "
                f"{exc.key.get_name()} {_fingerprint(exc.key)}, expected {exc.expected_key.get_name()} "
                f"{_fingerprint(exc.expected_key)}. This may be a man-in-the-middle attack; nothing was "
                f"sent. If the server's key was really regenerated, remove the old entry "
                f"(`ssh-keygen -R '[{self.host}]:{self.port}' -f {self.known_hosts_file}`) and add the new "
                f"one: {self._keyscan_hint()}"
            )
        if isinstance(exc, _UnknownHostKey):
            return (
                f"the SFTP server {self._where} is not in the known_hosts file {self.known_hosts_file} "
                f"(known_hosts_file setting): it offered {exc.key.get_name()} {_fingerprint(exc.key)}. "
                f"Host keys are never added automatically; if this is the right server, add its key: "
                f"{self._keyscan_hint()}"
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return (
                f"the SFTP server {self._where} refused the login of user {self.username!r} "
                f"(username setting) with the key in {self.key_file} (key_file setting): "
                f"{str(exc).rstrip('.')}. Check that the public key ({self.key_file}.pub) is in that "
                f"user's authorized_keys on the server"
            )
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            return (
                f"{action}: permission denied on the SFTP server {self._where} for user {self.username!r}. "
                f"Check the remote_dir setting ({self.remote_dir}) and that the folder is writable by that "
                f"user on the server"
            )
        if isinstance(
            exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError, socket.gaierror)
        ) or (isinstance(exc, (TimeoutError, EOFError)) and connecting):
            return (
                f"{action}: cannot connect to the SFTP server {self._where} (host and port settings): "
                f"{_describe(exc)}. Is sshd running there? Is the port right? "
                f"Does a firewall block it?"
            )
        if isinstance(exc, TimeoutError):
            return (
                f"{action}: the SFTP server {self._where} did not answer within io_timeout={self.io_timeout} "
                f"s (a stalled connection or a very slow network)"
            )
        if isinstance(exc, FileNotFoundError):
            return (
                f"{action}: no such file or folder on the SFTP server ({_describe(exc)}); check the name and "
                f"the remote_dir setting ({self.remote_dir})"
            )
        if isinstance(exc, OSError) and not connecting and self._connected():
            return f"{action}: the SFTP server {self._where} refused: {_describe(exc)}"
        return (
            f"{action}: SFTP to {self.username}@{self._where} failed: {_describe(exc)}. "
            f"Is sshd running there? Is the port right?"
        )

    def _retrying(
        self,
        action: str,
        attempt_fn: Callable[[paramiko.SFTPClient], T],
        cleanup: Callable[[paramiko.SFTPClient], None] | None = None,
    ) -> T:
        """Run ``attempt_fn(sftp)`` on a live connection, retrying transient failures.

        ``cleanup(sftp)`` runs on the next live connection after a failed attempt (to remove a
        temporary file the failed attempt left).
        """
        with self._lock:
            attempt = 0
            need_cleanup = False
            while True:
                connecting = True
                try:
                    sftp = self._connect()
                    connecting = False
                    if need_cleanup and cleanup is not None:
                        try:
                            cleanup(sftp)  # what the failed attempt left behind
                        except OSError as exc:
                            if self._is_transient(exc):
                                raise
                            log.warning("%s: cleaning up a failed attempt: %s", action, _describe(exc))
                        need_cleanup = False
                    return attempt_fn(sftp)
                except Exception as exc:  # noqa: BLE001 - classified below
                    need_cleanup = True
                    transient = self._is_transient(exc)
                    if not transient or attempt >= self.retries:
                        if transient:
                            self._disconnect()
                        if cleanup is not None and self._connected():
                            try:
                                cleanup(self._sftp)
                            except Exception:  # noqa: BLE001 - best effort; the first error matters
                                pass
                        message = self._explain(exc, action, connecting)
                        if transient:
                            message += f" (gave up after {attempt + 1} attempts)"
                        if isinstance(exc, FileNotFoundError) and not isinstance(exc, TransportError):
                            missing = RemoteFileNotFoundError(message)
                            missing.errno = errno.ENOENT
                            raise missing from exc
                        if isinstance(exc, TransportError):
                            raise
                        raise TransportError(message) from exc
                    self._disconnect()
                    attempt += 1
                    delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF)
                    log.warning(
                        "%s: %s; retry %d/%d in %.1f s", action, _describe(exc), attempt, self.retries, delay
                    )
                    time.sleep(delay)

    # ---- remote folders --------------------------------------------------------------
    def _makedirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        """``mkdir -p`` (the folders known to exist on this connection are skipped)."""
        missing = []
        current = folder
        while current not in ("", "/", ".") and current not in self._known_dirs:
            try:
                mode = sftp.stat(current).st_mode
            except FileNotFoundError:
                missing.append(current)
                current = posixpath.dirname(current)
                continue
            if mode is not None and not stat.S_ISDIR(mode):
                raise _Permanent(
                    f"remote path {current} on {self._where} exists but is not a folder; "
                    f"check the remote_dir setting ({self.remote_dir})"
                )
            break
        for path in reversed(missing):
            try:
                sftp.mkdir(path)
            except OSError as exc:
                try:  # created meanwhile by another uploader? then fine
                    created = stat.S_ISDIR(sftp.stat(path).st_mode or 0)
                except OSError:
                    created = False
                if not created:
                    raise exc from None
        self._known_dirs.add(folder)

    # ---- the interface -----------------------------------------------------------------
    def publish(self, local_path: Path, remote_name: str) -> None:
        """Upload ``local_path`` to ``remote_name`` under ``remote_dir`` atomically."""
        final = self._remote_path(remote_name)
        local_path = Path(local_path)
        try:
            size = local_path.stat().st_size
        except OSError as exc:
            raise TransportError(
                f"cannot publish {remote_name}: local file {local_path} can't be read: {exc.strerror}"
            ) from exc
        temps: list[str] = []

        def attempt(sftp: paramiko.SFTPClient) -> None:
            self._makedirs(sftp, posixpath.dirname(final))
            tmp = self._remote_path(temporary_name(remote_name))
            temps.append(tmp)
            with open(local_path, "rb") as fh:
                attrs = sftp.putfo(fh, tmp, file_size=size, callback=self.progress, confirm=True)
            if attrs.st_size != size:
                raise paramiko.SSHException(f"uploaded {attrs.st_size} bytes of {size} to {tmp}")
            sftp.posix_rename(tmp, final)
            temps.remove(tmp)

        def cleanup(sftp: paramiko.SFTPClient) -> None:
            for tmp in list(temps):
                try:
                    sftp.remove(tmp)
                except FileNotFoundError:
                    pass
                temps.remove(tmp)

        self._retrying(
            f"cannot publish {remote_name} to {self.remote_dir} on {self._where}", attempt, cleanup
        )

    def listdir(self, remote_dir: str = "") -> list[str]:
        path = self._remote_path(remote_dir) if remote_dir else self.remote_dir

        def attempt(sftp: paramiko.SFTPClient) -> list[str]:
            try:
                return sorted(sftp.listdir(path))
            except FileNotFoundError:
                return []

        return self._retrying(f"cannot list {path} on {self._where}", attempt)

    def read_bytes(self, remote_name: str) -> bytes:
        path = self._remote_path(remote_name)

        def attempt(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                return fh.read()

        return self._retrying(f"cannot read {path} on {self._where}", attempt)

    def remove(self, remote_name: str) -> None:
        path = self._remote_path(remote_name)

        def attempt(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except FileNotFoundError:
                pass

        self._retrying(f"cannot remove {path} on {self._where}", attempt)

    def check_writable(self) -> None:
        """Log in, create ``remote_dir`` if missing, and write and delete a probe file in it."""
        probe = self._remote_path(temporary_name("arb-write-check"))

        def attempt(sftp: paramiko.SFTPClient) -> None:
            self._makedirs(sftp, self.remote_dir)
            with sftp.open(probe, "wb") as fh:
                fh.write(b"")
            sftp.remove(probe)

        def cleanup(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(probe)
            except OSError:
                pass

        try:
            self._retrying(
                f"the remote folder {self.remote_dir} on {self._where} is not writable", attempt, cleanup
            )
        except TransportError as exc:
            if isinstance(exc.__cause__, (PermissionError, FileNotFoundError)):
                raise TransportError(
                    f"the remote folder {self.remote_dir} (remote_dir setting) on {self._where} is not "
                    f"writable by user {self.username!r}: {exc.__cause__}. Fix remote_dir, or the folder's "
                    f"owner and mode on the server (it must exist or be creatable, and be writable by "
                    f"that user)"
                ) from exc.__cause__
            raise

    def server_key(self) -> str:
        """``<type> SHA256:<fingerprint>`` of the host key the server presented (connects,
        and so verifies it against known_hosts, if not connected yet)."""

        def attempt(sftp: paramiko.SFTPClient) -> str:
            key = self._client.get_transport().get_remote_server_key()
            return f"{key.get_name()} {_fingerprint(key)}"

        return self._retrying(f"cannot connect to {self._where}", attempt)

    def disk_free(self) -> int | None:
        """Bytes available to this user in ``remote_dir``, from OpenSSH's ``statvfs@openssh.com``
        SFTP extension; None when the server doesn't offer it."""

        def attempt(sftp: paramiko.SFTPClient) -> int | None:
            from paramiko.sftp import CMD_EXTENDED, CMD_EXTENDED_REPLY

            try:
                kind, msg = sftp._request(CMD_EXTENDED, "statvfs@openssh.com", self.remote_dir)
            except (OSError, paramiko.SSHException) as exc:
                if self._connected():  # the server said no: the extension is missing
                    log.info("statvfs@openssh.com not available on %s: %s", self._where, _describe(exc))
                    return None
                raise
            if kind != CMD_EXTENDED_REPLY:
                return None
            # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_fsid, f_flag,
            # f_namemax
            fields = [msg.get_int64() for _ in range(11)]
            frsize = fields[1] or fields[0]
            return fields[4] * frsize

        return self._retrying(f"cannot read the free space of {self.remote_dir} on {self._where}", attempt)

    def close(self) -> None:
        with self._lock:
            self._disconnect()
