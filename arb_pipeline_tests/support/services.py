"""sshd and SMTP fixtures (a pytest plugin, loaded by conftest.py).

- ``sshd_server`` (session): a real, SFTP-only OpenSSH sshd on 127.0.0.1 with the
  production options of deploy/sshd/arb-sftp.conf: chrooted when run as root, otherwise
  unprivileged (run by the test user for itself, no chroot; ``remote_inbox`` is then an
  absolute path, so tests name it, never ``/inbox``). It needs /usr/sbin/sshd. Without it
  it skips with the reason, except when the environment says the services are required
  (``CI`` or ``ARB_REQUIRE_SSHD`` set), where a missing sshd is a failure: CI must not
  pass by skipping the SFTP tests. The chroot itself is tested by test_sshd_hardening.py
  (marker ``needs_root``: .ci/run runs those as root).
- ``sftp_inbox`` (function): the same server with an empty inbox and a known_hosts file
  that trusts its current host key.
- ``smtp_server`` (function): a fresh capturing SMTP server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from arb_pipeline.dev.smtp import LocalSmtp
from arb_pipeline.dev.sshd import LocalSshd, sshd_unavailable_reason
from arb_pipeline.sender.resources import BackupDestination


def services_required() -> bool:
    """Whether a missing service fails instead of skipping: CI must not pass by skipping."""
    return any(
        os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
        for name in ("ARB_REQUIRE_SSHD", "CI")
    )


@pytest.fixture(scope="session")
def sshd_server() -> Iterator[LocalSshd]:
    reason = sshd_unavailable_reason()
    if reason:
        if services_required():
            pytest.fail(f"sshd is required here (CI / ARB_REQUIRE_SSHD) but unavailable: {reason}")
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="arb-sshd-"))
    server = LocalSshd(base)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@pytest.fixture
def sftp_inbox(sshd_server: LocalSshd) -> Iterator[LocalSshd]:
    """The session sshd with an empty ``inbox_dir``; ``remote_inbox`` is its path for clients."""
    if sshd_server.pid is None:  # a test stopped it
        sshd_server.start()
    sshd_server.write_known_hosts()  # a test may have left a changed host key untrusted
    _empty(sshd_server.inbox_dir)
    yield sshd_server
    _empty(sshd_server.inbox_dir)


@pytest.fixture
def smtp_server() -> Iterator[LocalSmtp]:
    server = LocalSmtp().start()
    try:
        yield server
    finally:
        server.stop()


def sftp_destination(sshd: LocalSshd, **overrides) -> BackupDestination:
    """The sender's SFTP destination resource for a local sshd; ``overrides`` set any other field."""
    fields = dict(
        kind="sftp",
        host=sshd.host,
        port=sshd.port,
        username=sshd.username,
        key_file=str(sshd.client_key_path),
        known_hosts_file=str(sshd.known_hosts_path),
        remote_dir=sshd.remote_inbox,
    )
    return BackupDestination(**{**fields, **overrides})
