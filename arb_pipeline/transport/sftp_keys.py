"""Loading the SFTP client's private key, checked the way OpenSSH checks it.

The file must be a regular file private to its owner (no group/other bits, as ssh refuses
otherwise) and readable by this user. Any key type paramiko knows is accepted. Messages name
the ``key_file``/``key_passphrase`` setting and the fix, and never contain the key's content
or its passphrase.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import paramiko

from arb_pipeline.transport.sftp_errors import PermanentSftpError

log = logging.getLogger(__name__)


def load_private_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    """The private key in ``path`` (decrypted with ``passphrase`` if it is encrypted).

    Raises ``PermanentSftpError`` naming the key_file setting and the fix.
    """
    fix = "set key_file to the SFTP client's private key (an OpenSSH or PEM key file, mode 600)"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PermanentSftpError(
            f"the SFTP private key file {path} (key_file setting) does not exist: {fix}"
        ) from None
    except OSError as exc:
        raise PermanentSftpError(
            f"the SFTP private key file {path} (key_file setting) can't be read ({exc.strerror}): {fix}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise PermanentSftpError(
            f"the SFTP private key file {path} (key_file setting) is not a regular file: {fix}"
        )
    if os.name == "posix" and st.st_mode & 0o077:
        raise PermanentSftpError(
            f"the SFTP private key file {path} (key_file setting) has mode "
            f"{stat.S_IMODE(st.st_mode):04o}: "
            f"it is readable or writable by group/others, so it is refused (as ssh does). "
            f"Fix: `chmod 600 {path}` (and make sure the pipeline's user owns it)"
        )
    if not os.access(path, os.R_OK):
        raise PermanentSftpError(
            f"the SFTP private key file {path} (key_file setting) is not readable by this user "
            f"(uid {os.getuid()}): make the pipeline's user its owner and `chmod 600 {path}`"
        )
    # Errors while parsing are reported by type only, and without their cause: some
    # parser exceptions carry the key's bytes.
    encrypted_hint = "it is encrypted: set key_passphrase (from the environment) to its passphrase"
    try:
        return _parse_key(path, passphrase)
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
    raise PermanentSftpError(
        f"the SFTP private key file {path} (key_file setting) can't be used: {reason}"
    ) from None


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
