"""Which entries of the inbox are backup folders the pipeline received: retention
(ops/retention.py) deletes nothing else. Plain Python, no Dagster."""

from __future__ import annotations

import os
from pathlib import Path

from arb_pipeline.package.backup_id import parse_backup_id
from arb_pipeline.package.manifest import MANIFEST_NAME, Manifest
from arb_pipeline.transport.base import is_temporary_name


def is_backup_name(kind: str, name: str) -> bool:
    """A name the sender gives a backup of ``kind`` (a name alone proves little: see unlisted_entries)."""
    parsed = parse_backup_id(name)
    return parsed is not None and parsed.kind == kind and not is_temporary_name(name)


def unlisted_entries(folder: Path, manifest: Manifest) -> list[str]:
    """Entries of a backup folder that are neither its manifest, the files it lists, their
    folders, nor temporary upload names (links count as unlisted: never ours)."""
    listed = {MANIFEST_NAME} | {f.name for f in manifest.files}
    folders = {str(p) for n in listed for p in Path(n).parents} - {"."}
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow symlinks
        base = Path(dirpath)
        for name in dirnames + filenames:
            rel = str((base / name).relative_to(folder))
            is_link = (base / name).is_symlink()
            ok = rel in (folders if name in dirnames else listed) or is_temporary_name(name)
            if is_link or not ok:
                found.append(rel)
    return sorted(found)


def only_temporary_names(folder: Path) -> bool:
    """True when the folder tree holds only folders and temporary upload names (no manifest)."""
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow symlinks
        base = Path(dirpath)
        for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
            if not is_temporary_name(name) or name == MANIFEST_NAME:
                return False
    return True


def newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:
                pass
    return newest
