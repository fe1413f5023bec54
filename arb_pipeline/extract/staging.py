"""The sender's staging folder (ARB_STAGING_DIR): one folder per run, each carrying a
marker file, and the sweep that removes the ones left by runs that died.

The sweep deletes only folders holding the marker, so a staging setting that points at a
shared folder never costs another program its files: anything else there is left alone
and reported once (a note of what was reported is kept beside the run folders).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

MARKER_NAME = ".arb_pipeline_run"
MARKER_TEXT = "arb_pipeline staging folder of one run; removed after the run, or by the sweep\n"
REPORTED_NAME = ".arb_pipeline_foreign"  # entries of the staging folder already reported as not ours
SWEEP_AGE = timedelta(hours=6)


@dataclass
class Sweep:
    removed: list[Path] = field(default_factory=list)
    foreign: list[Path] = field(default_factory=list)  # reported for the first time by this sweep


def create_run_folder(staging_root: Path, run_id: str) -> Path:
    """A new, marked folder for one run (an existing folder of that name is refused, never reused)."""
    root = Path(staging_root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / run_id
    folder.mkdir()  # FileExistsError: never adopt a folder this run did not create
    (folder / MARKER_NAME).write_text(MARKER_TEXT)
    return folder


def is_run_folder(path: Path) -> bool:
    """A real folder (not a link) holding the marker as a regular file with the marker's text."""
    marker = path / MARKER_NAME
    try:
        if path.is_symlink() or not path.is_dir() or marker.is_symlink() or not marker.is_file():
            return False
        with marker.open("rb") as fh:
            return fh.read(len(MARKER_TEXT) + 1) == MARKER_TEXT.encode()
    except OSError:
        return False


def sweep_staging(staging_root: Path, older_than: timedelta = SWEEP_AGE) -> Sweep:
    """Remove run folders older than ``older_than`` (runs that died: SIGKILL skips every
    cleanup); report each other entry once and leave it."""
    sweep = Sweep()
    root = Path(staging_root)
    if not root.is_dir():
        return sweep
    cutoff = time.time() - older_than.total_seconds()
    others = []
    for child in sorted(root.iterdir()):
        if child.name == REPORTED_NAME or child.name.startswith(f".{REPORTED_NAME}."):
            continue  # the note and its temporary copy
        if not is_run_folder(child):
            others.append(child)
        elif child.lstat().st_mtime < cutoff:
            shutil.rmtree(child, ignore_errors=True)
            sweep.removed.append(child)
    sweep.foreign = _first_reports(root, others)  # the caller logs them (in the run's log)
    return sweep


def _first_reports(root: Path, others: list[Path]) -> list[Path]:
    """The entries not yet reported; the note is rewritten with the current ones (an entry
    removed and created again is reported again)."""
    note = root / REPORTED_NAME
    try:
        seen = set(note.read_text().splitlines()) if note.is_file() and not note.is_symlink() else set()
    except OSError:
        seen = set()
    new = [p for p in others if p.name not in seen]
    current = "".join(f"{p.name}\n" for p in others)
    if current != "".join(f"{n}\n" for n in sorted(seen)) and not note.is_symlink():
        try:
            temp = root / f".{REPORTED_NAME}.{os.getpid()}.tmp"
            temp.write_text(current)
            os.replace(temp, note)
        except OSError:
            pass  # a read-only note only means reporting again next time
    return new
