"""SFTP failures: which ones are worth a retry, and a message that names the setting and the fix.

Transient failures (connection refused/reset, EOF, timeouts, SSH protocol errors, an SFTP
error after the connection died) are retried on a new connection; an answer from the server
(authentication refused, unknown or changed host key, permission denied, no such file) is not.
Messages name the setting involved (``host``/``port``, ``username``, ``key_file``,
``known_hosts_file``, ``remote_dir``) and never contain the key's content or its passphrase.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import socket
from typing import TYPE_CHECKING

import paramiko

from arb_pipeline.transport.base import TransportError

if TYPE_CHECKING:
    from arb_pipeline.transport.sftp import SftpTransport


class RemoteFileNotFoundError(TransportError, FileNotFoundError):
    """A remote file does not exist (also a ``FileNotFoundError``, like the local transport's)."""


class PermanentSftpError(TransportError):
    """A failure retrying can't fix (bad setting, refused login, host key, permissions)."""


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts (raised by the transport's host key policy)."""

    def __init__(self, hostname: str, key: paramiko.PKey):
        super().__init__(f"host key for {hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint (what ``ssh-keygen -lf`` prints)."""
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
    UnknownHostKey,
)


def is_transient(exc: BaseException, connected: bool) -> bool:
    """Whether a new connection may fix ``exc`` (``connected``: the connection is still alive)."""
    if isinstance(exc, (TransportError, *_PERMANENT_SSH_TYPES)):
        return False
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, paramiko.SSHException):
        return True
    if isinstance(exc, OSError):
        # An SFTP status (permission denied, no such file, failure) on a live connection is
        # the server's answer; the same error with the connection gone is a network failure.
        return exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS) and not connected
    return False


def keyscan_hint(t: SftpTransport) -> str:
    """How to add the server's host key to ``t``'s known_hosts file, and check it."""
    return (
        f"`ssh-keyscan -p {t.port} {t.host} >> {t.known_hosts_file}` and check that the "
        f"fingerprint it adds (`ssh-keygen -lf {t.known_hosts_file}`) matches the server's "
        f"(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the server)"
    )


def explain(exc: BaseException, action: str, t: SftpTransport, *, connecting: bool, connected: bool) -> str:
    """A message naming ``t``'s setting and the fix for an error from paramiko or the server.

    ``connecting``: the error came while connecting; ``connected``: the connection is still alive.
    """
    where = f"{t.host}:{t.port}"
    if isinstance(exc, TransportError):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (
            f"the host key of the SFTP server {where} has CHANGED since it was recorded in the "
            f"known_hosts file {t.known_hosts_file} (known_hosts_file setting): it offered "
            f"{exc.key.get_name()} {fingerprint(exc.key)}, expected {exc.expected_key.get_name()} "
            f"{fingerprint(exc.expected_key)}. This may be a man-in-the-middle attack; nothing was "
            f"sent. If the server's key was really regenerated, remove the old entry "
            f"(`ssh-keygen -R '[{t.host}]:{t.port}' -f {t.known_hosts_file}`) and add the new "
            f"one: {keyscan_hint(t)}"
        )
    if isinstance(exc, UnknownHostKey):
        return (
            f"the SFTP server {where} is not in the known_hosts file {t.known_hosts_file} "
            f"(known_hosts_file setting): it offered {exc.key.get_name()} {fingerprint(exc.key)}. "
            f"Host keys are never added automatically; if this is the right server, add its key: "
            f"{keyscan_hint(t)}"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return (
            f"the SFTP server {where} refused the login of user {t.username!r} "
            f"(username setting) with the key in {t.key_file} (key_file setting): "
            f"{str(exc).rstrip('.')}. Check that the public key ({t.key_file}.pub) is in that "
            f"user's authorized_keys on the server"
        )
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return (
            f"{action}: permission denied on the SFTP server {where} for user {t.username!r}. "
            f"Check the remote_dir setting ({t.remote_dir}) and that the folder is writable by that "
            f"user on the server"
        )
    if isinstance(
        exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError, socket.gaierror)
    ) or (isinstance(exc, (TimeoutError, EOFError)) and connecting):
        return (
            f"{action}: cannot connect to the SFTP server {where} (host and port settings): "
            f"{describe(exc)}. Is sshd running there? Is the port right? "
            f"Does a firewall block it?"
        )
    if isinstance(exc, TimeoutError):
        return (
            f"{action}: the SFTP server {where} did not answer within io_timeout={t.io_timeout} "
            f"s (a stalled connection or a very slow network)"
        )
    if isinstance(exc, FileNotFoundError):
        return (
            f"{action}: no such file or folder on the SFTP server ({describe(exc)}); check the name and "
            f"the remote_dir setting ({t.remote_dir})"
        )
    if isinstance(exc, OSError) and not connecting and connected:
        return f"{action}: the SFTP server {where} refused: {describe(exc)}"
    return (
        f"{action}: SFTP to {t.username}@{where} failed: {describe(exc)}. "
        f"Is sshd running there? Is the port right?"
    )
