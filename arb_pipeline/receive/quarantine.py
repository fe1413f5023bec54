"""Quarantine: a bad backup is moved aside with its reason, never deleted (promise 4).

```
<quarantine_root>/<kind>/<backup_id>[.N]/   the backup folder, as it arrived
    REASON.txt                               why, when, and how to re-queue it
```
A move is one ``os.rename`` when the inbox and the quarantine share a filesystem;
across filesystems the folder is copied under a temporary name that inbox readers
ignore (``.<name>.<random>.part``), compared byte for byte, renamed into place, and only
then removed from where it was. Plain Python, no Dagster.
"""

from __future__ import annotations

import errno
import filecmp
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from arb_pipeline.errors import ArbError
from arb_pipeline.fsutil import fsync_dir
from arb_pipeline.package.backup_id import KINDS

REASON_NAME = "REASON.txt"
_MARKER = "# arb_pipeline quarantine"


class QuarantineError(ArbError):
    """Moving a backup in or out of quarantine failed; the message names the folder and the fix."""


class QuarantinedBackup(NamedTuple):
    kind: str
    name: str  # folder name in the quarantine: the backup id, maybe with a ".N" suffix
    reason: str


def _reason_text(
    backup_dir: Path, kind: str, reason: str, when: datetime, dest_name: str, backup_id: str
) -> str:
    return (
        f"{_MARKER}\n"
        f"backup: {backup_id}\n"
        f"kind: {kind}\n"
        f"quarantined at: {when.strftime('%Y-%m-%dT%H:%M:%SZ')} (UTC)\n"
        f"moved from: {backup_dir}\n"
        "\n"
        "reason:\n"
        f"{reason.rstrip()}\n"
        "\n"
        "to re-queue it once the cause is fixed:\n"
        f"  arb requeue {dest_name}\n"
        f"or move this folder back to the receiver's inbox as {kind}/{backup_id} "
        f"and delete this {REASON_NAME}.\n"
    )


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _move_folder(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (which must not exist); copy+compare+remove across filesystems."""
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
    try:
        os.rename(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    else:
        fsync_dir(dest.parent)
        fsync_dir(src.parent)
        return
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        shutil.copytree(src, temp, symlinks=True, copy_function=shutil.copy2)
        if not _same_tree(src, temp):
            raise QuarantineError(f"copying {src} to {temp} gave different content; {src} is left in place")
        if dest.exists() or dest.is_symlink():
            raise FileExistsError(errno.EEXIST, "destination exists", str(dest))
        os.rename(temp, dest)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)  # our own partial copy; the original is untouched
        raise
    fsync_dir(dest.parent)
    shutil.rmtree(src)  # the content is now safely at dest


def quarantine(backup_dir: Path, quarantine_root: Path, reason: str) -> Path:
    """Move a backup folder to ``<quarantine_root>/<kind>/<name>`` (``.2``, ``.3``… if that
    exists) and write REASON.txt into it. Returns the new folder. Never deletes anything."""
    backup_dir = Path(backup_dir)
    if backup_dir.is_symlink() or not backup_dir.is_dir():
        raise QuarantineError(f"can't quarantine {backup_dir}: it is not a folder")
    kind = backup_dir.parent.name
    if kind not in KINDS:
        raise QuarantineError(
            f"can't quarantine {backup_dir}: its parent folder is {kind!r}, not partial or "
            "complete (a backup lives at <inbox>/<kind>/<backup_id>)"
        )
    target_parent = Path(quarantine_root) / kind
    try:
        target_parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QuarantineError(
            f"can't create the quarantine folder {target_parent} ({exc.strerror}); "
            "check the receiver's quarantine_dir setting and its permissions"
        ) from None
    when = datetime.now(timezone.utc)
    name = backup_dir.name
    for n in range(1, 10_000):
        dest = target_parent / (name if n == 1 else f"{name}.{n}")
        if dest.exists() or dest.is_symlink():
            continue
        try:
            _move_folder(backup_dir, dest)
        except FileExistsError:
            continue  # taken meanwhile: next suffix
        except OSError as exc:
            raise QuarantineError(
                f"can't move {backup_dir} to {dest} ({exc.strerror}); the backup is left in "
                "place: check the permissions of both folders"
            ) from None
        break
    else:
        raise QuarantineError(f"{target_parent} already holds 9999 copies of {name}: clean up the quarantine")
    reason_path = dest / REASON_NAME
    n = 1
    while reason_path.exists() or reason_path.is_symlink():  # never overwrite a file the backup brought
        n += 1
        reason_path = dest / f"REASON.{n}.txt"
    temp = dest / f".{reason_path.name}.{secrets.token_hex(4)}.part"
    with open(temp, "x", encoding="utf-8") as fh:
        fh.write(_reason_text(backup_dir, kind, reason, when, dest.name, name))
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(temp, reason_path)
    fsync_dir(dest)
    return dest


def _reason_files(folder: Path) -> list[Path]:
    """The reason files quarantine() wrote into ``folder`` (recognised by their first line)."""
    found = []
    for path in sorted(folder.glob("REASON*.txt")):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                if fh.readline().rstrip("\n") == _MARKER:
                    found.append(path)
        except OSError:
            continue
    return found


def _parse_reason(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = lines.index("reason:") + 1
    except ValueError:
        return ""
    out = []
    for line in lines[start:]:
        if line == "to re-queue it once the cause is fixed:":
            break
        out.append(line)
    return "\n".join(out).strip()


def list_quarantined(quarantine_root: Path) -> list[QuarantinedBackup]:
    """Every quarantined backup as (kind, folder name, reason), sorted by kind and name."""
    root = Path(quarantine_root)
    out = []
    for kind in KINDS:
        parent = root / kind
        if not parent.is_dir():
            continue
        for folder in sorted(parent.iterdir()):
            if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
                continue
            reasons = _reason_files(folder)
            out.append(QuarantinedBackup(kind, folder.name, _parse_reason(reasons[-1]) if reasons else ""))
    return out


def _find(quarantine_root: Path, backup_id: str) -> Path:
    if not backup_id or "/" in backup_id or backup_id in (".", "..") or backup_id.startswith("."):
        raise QuarantineError(
            f"{backup_id!r} is not a backup id; see the quarantined ones with list_quarantined"
        )
    root = Path(quarantine_root)
    exact = [root / k / backup_id for k in KINDS if (root / k / backup_id).is_dir()]
    if exact:
        return exact[0]
    copies = [
        root / k / p.name
        for k in KINDS
        if (root / k).is_dir()
        for p in (root / k).iterdir()
        if p.is_dir() and p.name.rsplit(".", 1)[0] == backup_id and p.name.rsplit(".", 1)[-1].isdigit()
    ]
    if len(copies) == 1:
        return copies[0]
    if copies:
        raise QuarantineError(
            f"backup {backup_id} is quarantined {len(copies)} times "
            f"({', '.join(sorted(p.name for p in copies))}): pass the folder name of the one to re-queue"
        )
    raise QuarantineError(f"backup {backup_id} is not in the quarantine {root}")


def requeue(quarantine_root: Path, backup_id: str, inbox_root: Path) -> Path:
    """Move a quarantined backup back to ``<inbox_root>/<kind>/<backup_id>`` without its
    REASON.txt, so the receiver verifies and loads it again. ``backup_id`` may be the
    quarantine folder's name (with its ``.N`` suffix). Refuses when the inbox has it."""
    folder = _find(Path(quarantine_root), backup_id)
    kind = folder.parent.name
    name = folder.name
    base = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() and "." in name else name
    target_parent = Path(inbox_root) / kind
    target = target_parent / base
    if target.exists() or target.is_symlink():
        raise QuarantineError(
            f"can't re-queue {name}: the inbox already has {target}; remove or quarantine that one first"
        )
    target_parent.mkdir(parents=True, exist_ok=True)
    # Take the reason files out first (beside the folder, under names readers ignore), so
    # the inbox never sees them; they go back if the move fails.
    parked = []
    for path in _reason_files(folder):
        aside = folder.parent / f".{name}.{path.name}.{secrets.token_hex(4)}.part"
        os.rename(path, aside)
        parked.append((path, aside))
    try:
        _move_folder(folder, target)
    except BaseException as exc:
        for path, aside in parked:
            os.rename(aside, path)
        if isinstance(exc, FileExistsError):
            raise QuarantineError(f"can't re-queue {name}: the inbox already has {target}") from None
        if isinstance(exc, OSError):
            raise QuarantineError(
                f"can't move {folder} to {target} ({exc.strerror}); it stays in the quarantine"
            ) from None
        raise
    for _path, aside in parked:
        os.unlink(aside)
    return target


__all__ = ["QuarantineError", "QuarantinedBackup", "REASON_NAME", "list_quarantined", "quarantine", "requeue"]
