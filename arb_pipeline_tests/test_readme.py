"""Every command the README shows still exists with the options it shows, and the ones no
other test runs are run here.

Where each command runs for real:
- `bash scripts/test.sh`: CI (.ci/run); `bash scripts/demo.sh [--sftp]`: test_demo.py
- `arb check`: test_connectivity.py; `arb migrate`: support/postgres.py and test_migrate.py;
  `arb inspect|quarantined|requeue`: test_backups_cli.py; `arb parity`: test_parity.py,
  test_pitr.py; `arb restore`: test_pitr.py; `arb generate`: test_generator.py; `arb demo`: test_demo.py
- `dagster asset materialize` of the sender: test_sender_assets.py; of the receiver's loads
  and postprocessing: faults/ (scenarios 6, 7, 8); on the PostgreSQL instance: test_production_instance.py
- `psql ... -f restore.sql`: test_extract.py, test_drill.py; `deploy/sql/receiver-role.sql`:
  test_receiver_hardening.py (support/roles.py)
- `python -m bench.run`, `python -m bench.postprocess`: here, on tiny sizes
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from arb_pipeline.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _snippets() -> list[str]:
    """Inline code spans and lines of fenced code blocks."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    prose = re.sub(r"```[a-z]*\n.*?```", "", README, flags=re.S)
    return [s for s in lines + re.findall(r"`([^`\n]+)`", prose) if s]


def _commands(program: str) -> list[list[str]]:
    found = []
    for snippet in _snippets():
        for part in re.split(r"&&|\|", snippet):
            part = part.strip().replace(".venv/bin/", "")
            if part.startswith(program + " "):
                try:
                    found.append(shlex.split(part))
                except ValueError:
                    found.append(part.split())
    return found


def _subparsers(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _options(parser) -> set[str]:
    opts = set()
    for action in parser._actions:
        opts.update(action.option_strings)
        if hasattr(action, "choices") and isinstance(action.choices, dict):  # nested subcommands
            for sub in action.choices.values():
                opts |= _options(sub)
    return opts


def test_every_arb_command_in_the_readme_exists_with_its_options():
    commands = _commands("arb")
    assert len(commands) >= 15, "the README shows the arb command line"
    subs = _subparsers(build_parser())
    for words in commands:
        sub = words[1]
        if sub == "COMMAND":
            continue
        assert sub in subs, f"README shows `arb {sub}`, which doesn't exist"
        known = _options(subs[sub]) | {"--help", "-h"}
        shown = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
        assert shown <= known, (
            f"`arb {sub}` has no option {sorted(shown - known)} (README: {' '.join(words)})"
        )
        positional = [w for w in words[2:] if not w.startswith("-") and w != "..."]
        if sub == "generate" and positional:
            assert positional[0] in _subparsers(subs[sub]), f"no `arb generate {positional[0]}`"


def test_every_dagster_materialize_in_the_readme_names_a_real_group_and_partition():
    commands = [c for c in _commands("dagster") if c[1:3] == ["asset", "materialize"] and "-m" in c]
    assert len(commands) >= 3
    for words in commands:
        module = importlib.import_module(words[words.index("-m") + 1])
        selection = words[words.index("--select") + 1]
        group = selection.removeprefix("group:")
        assets = [
            a
            for a in module.defs.resolve_asset_graph().assets_defs
            if group in set(a.group_names_by_key.values())
        ]
        assert assets, f"README selects {selection} in {module.__name__}, which has no such group"
        if "--partition" in words:
            key = words[words.index("--partition") + 1]
            if key != "KEY":
                partitions = assets[0].partitions_def
                assert partitions.has_partition_key(key), f"{key} is not a partition of {selection}"


def test_the_scripts_the_readme_shows_exist_and_take_their_options():
    for words in _commands("bash"):
        if words[1].startswith("scripts/"):
            assert (REPO / words[1]).is_file(), words
            if words[1] == "scripts/demo.sh":  # it execs `arb demo "$@"`
                demo = _options(_subparsers(build_parser())["demo"])
                assert {w for w in words[2:] if w.startswith("--")} <= demo, words
    assert (REPO / ".ci/run").is_file()
    assert (REPO / "deploy/sql/receiver-role.sql").is_file()


@pytest.mark.parametrize(
    "module, args, expect",
    [
        (
            "bench.run",
            ["--gigabytes", "0.01", "--window-rows", "1000", "--catchup-partials", "2"],
            ["complete dump-and-package / pg_dump to a file:", "complete cycle", "/ pg_dump | psql:"],
        ),
        (
            "bench.postprocess",
            ["--events", "1000", "--window-events", "20", "--window-updates", "10"],
            ["full backfill of 1,000 events", "the pure-SQL floor", "typical 5-minute window"],
        ),
    ],
)
def test_the_benchmarks_run_and_print_ratios_against_their_baselines(module, args, expect):
    assert f"python -m {module}" in README
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in expect:
        assert text in proc.stdout, proc.stdout[-3000:]
