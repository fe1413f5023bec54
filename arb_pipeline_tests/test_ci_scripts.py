"""The scripts CI itself relies on, run as bash runs them (`set -euo pipefail`).

scripts/leftover-processes.sh decides whether `.ci/run` passes after the suite: it must pass
for a user who owns no process (the good case, where `ps -u USER` exits 1) and for a user
that does not exist, and fail, naming the PIDs, for a user who still runs something.
"""

import os
import pwd
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "leftover-processes.sh"


def _run(user: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), user], capture_output=True, text=True, timeout=30)


def _uids_running() -> set[int]:
    uids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uids.add(entry.stat().st_uid)
            except FileNotFoundError:
                pass
    return uids


def test_user_without_processes_passes():
    busy = _uids_running()
    idle = next(p.pw_name for p in pwd.getpwall() if p.pw_uid not in busy)
    result = _run(idle)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_missing_user_passes():
    result = _run("arb-no-such-user-x")
    assert result.returncode == 0, result.stderr


def test_user_with_a_process_fails_and_names_it():
    me = pwd.getpwuid(os.getuid()).pw_name
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            result = _run(me)
        finally:
            sleeper.kill()
    assert result.returncode == 1
    assert str(sleeper.pid) in result.stdout.split()
    assert "still running" in result.stderr
