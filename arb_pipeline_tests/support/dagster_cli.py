"""`dagster asset materialize` as a user runs it: the real CLI in a subprocess, on one code
location's asset group and one partition or a range of them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DAGSTER = str(Path(sys.executable).with_name("dagster"))
REPO = Path(__file__).resolve().parents[2]


def materialize_command(side: str, group: str, partition: str) -> list[str]:
    """The command line: ``side`` is "sender" or "receiver", ``group`` an asset group of it;
    ``partition`` one key, or a range FIRST...LAST."""
    flag = "--partition-range" if "..." in partition else "--partition"
    return [
        DAGSTER, "asset", "materialize", "-m", f"arb_pipeline.{side}.definitions",
        "--select", f"group:{group}", flag, partition,
    ]  # fmt: skip


def run_materialize(
    side: str, group: str, partition: str, env: dict[str, str], wrapper: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    """Run it to the end in the repository, whatever its exit code; ``wrapper`` goes before
    the command (e.g. setpriv, to run it with fewer rights)."""
    return subprocess.run(
        [*wrapper, *materialize_command(side, group, partition)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def materialize(side: str, group: str, partition: str, env: dict[str, str]) -> None:
    """Run it; fails the test with its stderr if it fails."""
    done = run_materialize(side, group, partition, env)
    assert done.returncode == 0, done.stderr[-3000:]
