"""SSH client keys for the SFTP tests, made on the spot."""

from __future__ import annotations

import os
from pathlib import Path


def new_key(kind: str, path: Path, passphrase: bytes | None) -> str:
    """Write a private key of ``kind`` (mode 600); return its OpenSSH public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    key = {
        "ed25519": lambda: ed25519.Ed25519PrivateKey.generate(),
        "ecdsa": lambda: ec.generate_private_key(ec.SECP256R1()),
        "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }[kind]()
    fmt = (
        serialization.PrivateFormat.OpenSSH
        if kind == "ed25519"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, fmt, enc))
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
