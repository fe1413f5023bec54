"""Parity of the media folders: the receiver's must hold the sender's files byte for byte.

Files are paired by their POSIX name relative to the folder (the name the media columns
store) and compared by size, then sha256.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arb_pipeline.errors import ConfigError
from arb_pipeline.ops.parity import CHANGED, EXTRA, KINDS, MISSING, format_counts


@dataclass(frozen=True)
class FileDiff:
    kind: str
    name: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@dataclass
class MediaParity:
    """Media folders compared by relative file name and sha256."""

    sender_dir: str
    receiver_dir: str
    sender_files: int
    receiver_files: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    diffs: list[FileDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    @property
    def missing(self) -> list[str]:
        return [d.name for d in self.diffs if d.kind == MISSING]

    @property
    def extra(self) -> list[str]:
        return [d.name for d in self.diffs if d.kind == EXTRA]

    @property
    def changed(self) -> list[str]:
        return [d.name for d in self.diffs if d.kind == CHANGED]

    def format(self) -> str:
        if self.ok:
            return f"media: OK ({self.sender_files} files)"
        text = (
            f"media: DRIFT sender {self.sender_files} files, receiver {self.receiver_files} files; "
            + format_counts(self.counts)
        )
        return text + "; first files: " + "; ".join(f"{d.name} {d.kind}" for d in self.diffs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "sender_dir": self.sender_dir,
            "receiver_dir": self.receiver_dir,
            "sender_files": self.sender_files,
            "receiver_files": self.receiver_files,
            "counts": dict(self.counts),
            "diffs": [d.to_dict() for d in self.diffs],
        }


def _media_files(root: Path) -> dict[str, Path]:
    """Regular files under ``root`` by POSIX relative name (the name media columns store)."""
    if not root.is_dir():
        raise ConfigError(
            f"media folder {root} does not exist or is not a folder: check the media path setting"
        )
    files: dict[str, Path] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for fname in filenames:
            path = Path(dirpath, fname)
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path
    return files


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def compare_media(
    sender_dir: str | os.PathLike, receiver_dir: str | os.PathLike, max_diffs: int = 10
) -> MediaParity:
    """Files missing on, extra on, or different on the receiver (sizes first, then sha256)."""
    s_root, r_root = Path(sender_dir), Path(receiver_dir)
    s_files, r_files = _media_files(s_root), _media_files(r_root)
    result = MediaParity(str(s_root), str(r_root), len(s_files), len(r_files))
    for name in sorted(s_files.keys() | r_files.keys()):
        if name not in r_files:
            kind = MISSING
        elif name not in s_files:
            kind = EXTRA
        elif s_files[name].stat().st_size != r_files[name].stat().st_size or _sha256(
            s_files[name]
        ) != _sha256(r_files[name]):
            kind = CHANGED
        else:
            continue
        result.counts[kind] += 1
        if len(result.diffs) < max_diffs:
            result.diffs.append(FileDiff(kind, name))
    return result
