"""The repository itself: no tracked file holds a merge's conflict markers (a Markdown file
with them passes every other check, as one did)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(rb"^(<{7}|>{7}) |^={7}$", re.MULTILINE)


def test_no_tracked_file_holds_conflict_markers():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    found = []
    for name in listed.stdout.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.suffix in {".py", ".md", ".sql", ".toml", ".yaml", ".sh", ""}:
            if MARKER.search(path.read_bytes()):
                found.append(name)
    assert found == []
