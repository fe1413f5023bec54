"""Checks of where the sender publishes: the transport's settings and, over SFTP, the
receiver (reachable, host key known and unchanged, remote folder writable, free space).
The sender's ``receiver_connectivity`` asset runs ``destination_items`` every hour.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from arb_pipeline.ops.preflight.item import FAIL, OK, SKIP, WARN, Item, mb
from arb_pipeline.ops.preflight.local import folder_item
from arb_pipeline.settings import DestinationSettings


def transport_items(remote: bool, d: DestinationSettings) -> Iterator[Item]:
    """The transport's settings (the inbox folder, or the SFTP key and known_hosts) and, with
    ``remote``, the receiver over SFTP (``destination_items``)."""
    if d.kind == "local":
        yield Item("ARB_TRANSPORT", OK, "local folder (one machine)")
        yield folder_item("ARB_INBOX_DIR", d.local_dir, writable=True)
        return
    yield Item("ARB_TRANSPORT", OK, "sftp")
    missing = d.missing_sftp()
    for name in missing:
        yield Item(name, FAIL, "not set", "see docs/settings.md")
    if missing:
        return
    key = Path(d.key_file)
    if not key.is_file():
        yield Item(
            "ARB_SFTP_KEY_FILE",
            FAIL,
            f"{key} does not exist",
            f"ssh-keygen -t ed25519 -N '' -f {key}; put {key}.pub in the receiver's authorized_keys",
        )
    elif key.stat().st_mode & 0o077:
        yield Item("ARB_SFTP_KEY_FILE", FAIL, f"{key} is readable by group/others", f"chmod 600 {key}")
    else:
        yield Item("ARB_SFTP_KEY_FILE", OK, str(key))
    known = Path(d.known_hosts_file)
    host, port = d.host, d.port
    if not known.is_file():
        yield Item(
            "ARB_SFTP_KNOWN_HOSTS",
            FAIL,
            f"{known} does not exist",
            f"ssh-keyscan -p {port} {host} >> {known}, after checking the fingerprint with the "
            "receiver's admin",
        )
    else:
        yield Item("ARB_SFTP_KNOWN_HOSTS", OK, str(known))
    if not remote:
        yield Item("receiver", SKIP, "remote checks skipped (--no-remote)")
        return
    from arb_pipeline.transport.sftp import SftpTransport

    def open_transport():
        return SftpTransport(
            host=host,
            port=port,
            username=d.username,
            key_file=str(key),
            known_hosts_file=str(known),
            remote_dir=d.remote_dir,
            key_passphrase=d.key_passphrase or None,
            retries=0,
        )

    yield from destination_items(
        open_transport,
        kind="sftp",
        host=host,
        port=port,
        min_free_bytes=int(d.min_free_mb * 1024 * 1024),
    )


def destination_items(
    open_transport: Callable[[], Any],
    *,
    kind: str,
    host: str = "",
    port: int = 22,
    min_free_bytes: int = 0,
    connect_timeout: float = 10,
) -> list[Item]:
    """Receiver reachable, host key known and unchanged, remote folder writable, room on it."""
    from arb_pipeline.transport.base import TransportError

    items: list[Item] = []
    if kind == "sftp":
        t0 = time.monotonic()
        try:
            socket.create_connection((host, port), timeout=connect_timeout).close()
        except OSError as exc:
            items.append(
                Item(
                    "receiver reachable",
                    FAIL,
                    f"no TCP connection to {host}:{port}: {exc}",
                    "start sshd on the receiver (`systemctl start ssh`), check ARB_SFTP_HOST and "
                    "ARB_SFTP_PORT, and that no firewall blocks the port",
                )
            )
            return items
        ms = (time.monotonic() - t0) * 1000
        items.append(
            Item(
                "receiver reachable",
                OK,
                f"{host}:{port} accepts connections ({ms:.0f} ms)",
                metrics={"connect_ms": round(ms, 1)},
            )
        )
    try:
        transport = open_transport()
    except Exception as exc:  # a missing setting
        items.append(
            Item("destination settings", FAIL, str(exc), "set the ARB_SFTP_* / ARB_INBOX_DIR settings")
        )
        return items
    try:
        try:
            key = transport.server_key()
        except TransportError as exc:
            items.append(_session_failure(exc))
            return items
        items.append(Item("receiver host key", OK, f"{key} matches the known_hosts file"))
        try:
            transport.check_writable()
        except TransportError as exc:
            items.append(
                Item(
                    "remote folder writable",
                    FAIL,
                    str(exc),
                    "create the folder on the receiver, owned by the SFTP user (docs/production.md, step 5)",
                )
            )
            return items
        items.append(Item("remote folder writable", OK, "a probe file was written and removed"))
        try:
            free = transport.disk_free()
        except TransportError as exc:
            items.append(Item("remote free space", WARN, f"unknown: {exc}"))
            return items
        if free is None:
            items.append(
                Item(
                    "remote free space",
                    WARN,
                    "unknown: the SFTP server does not offer statvfs@openssh.com",
                    "use OpenSSH's sftp server, or watch the receiver's disk there",
                )
            )
        elif free < min_free_bytes:
            items.append(
                Item(
                    "remote free space",
                    FAIL,
                    f"{mb(free)} free, below ARB_REMOTE_MIN_FREE_MB ({mb(min_free_bytes)})",
                    "free space on the receiver's inbox volume, or shorten "
                    "retention there (ARB_BKPS_LIFETIME)",
                    {"free_bytes": free},
                )
            )
        else:
            items.append(Item("remote free space", OK, f"{mb(free)} free", metrics={"free_bytes": free}))
    finally:
        transport.close()
    return items


def _session_failure(exc) -> Item:
    import paramiko

    from arb_pipeline.transport.sftp_errors import UnknownHostKey

    cause = exc.__cause__
    if isinstance(cause, (paramiko.BadHostKeyException, UnknownHostKey)):
        return Item(
            "receiver host key",
            FAIL,
            str(exc),
            "compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the "
            "receiver; only if they match, replace the entry in ARB_SFTP_KNOWN_HOSTS",
        )
    if isinstance(cause, paramiko.AuthenticationException):
        return Item(
            "SFTP login", FAIL, str(exc), "put the sender's public key in the SFTP user's authorized_keys"
        )
    return Item("SFTP session", FAIL, str(exc), "check the ARB_SFTP_* settings and the receiver's sshd log")
