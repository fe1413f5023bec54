"""SFTP behind the transport interface (paramiko; no dagster-ssh).

Safe by default (promise 5): the server's host key must already be in the configured
known_hosts file (``RejectPolicy``, never auto-added; no ssh-agent, no ``~/.ssh`` keys), and
the private key file must be private to its owner (checked in sftp_keys.py).

All or nothing (promise 3): ``publish`` uploads to a temporary name in the final folder
(``.<name>.<random>.part``), checks the uploaded size and then ``posix_rename``\\ s it onto the
final name, which atomically replaces an older file. A reader of the folder sees the old
file or the whole new one under the final name, never a partial one.

Transient failures are retried with exponential backoff on a new connection; an answer from
the server fails at once (which is which, and the messages naming the setting and the fix:
sftp_errors.py). Every read and write on the SFTP channel has a timeout, so a stalled
connection raises instead of hanging.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import paramiko

from arb_pipeline.transport.base import TransportError, check_relative, temporary_name
from arb_pipeline.transport.sftp_errors import (
    PermanentSftpError,
    RemoteFileNotFoundError,
    UnknownHostKey,
    describe,
    explain,
    fingerprint,
    is_transient,
    keyscan_hint,
)
from arb_pipeline.transport.sftp_keys import load_private_key

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF = 60.0


class _RejectUnknownHost(paramiko.RejectPolicy):
    """``RejectPolicy`` with an exception that carries the offered key, for a useful message."""

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


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

    # ---- key ---------------------------------------------------------------------------
    def _load_key(self) -> paramiko.PKey:
        if self._key is None:
            self._key = load_private_key(self.key_file, self.__passphrase or None)
        return self._key

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
                raise PermanentSftpError(
                    f"the known_hosts file {self.known_hosts_file} (known_hosts_file setting) does not "
                    f"exist; host keys are only trusted from it. Create it with the server's key: "
                    f"{keyscan_hint(self)}"
                ) from None
            except (OSError, paramiko.SSHException) as exc:
                raise PermanentSftpError(
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
        return is_transient(exc, connected=self._connected())

    def _explain(self, exc: BaseException, action: str, connecting: bool) -> str:
        return explain(exc, action, self, connecting=connecting, connected=self._connected())

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
                            log.warning("%s: cleaning up a failed attempt: %s", action, describe(exc))
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
                        "%s: %s; retry %d/%d in %.1f s", action, describe(exc), attempt, self.retries, delay
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
                raise PermanentSftpError(
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
            return f"{key.get_name()} {fingerprint(key)}"

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
                    log.info("statvfs@openssh.com not available on %s: %s", self._where, describe(exc))
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
