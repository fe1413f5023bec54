"""The README and docs/*.md stay true: every command they show exists with the options they
show, every relative link and every repository path they name exists, the code layout they
draw is the package's, and the repository refers to nothing outside it. The commands no
other test runs are run here.

Where each command runs for real:
- `bash scripts/test.sh`: CI (.ci/run); `bash scripts/demo.sh [--sftp]`: test_demo.py
- `arb check`: test_connectivity.py; `arb migrate`: support/postgres.py and test_migrate.py;
  `arb inspect|quarantined|requeue`: test_backups_cli.py; `arb parity`: test_parity.py,
  test_pitr.py; `arb restore`: test_pitr.py; `arb generate`: test_generator.py; `arb demo`: test_demo.py;
  `arb zones import`: test_zones_import.py; `arb capture setup|drop|status`: capture/test_capture_ops.py
- `dagster asset materialize` of the sender: test_sender_assets.py; of the receiver's loads
  and postprocessing: faults/ (scenarios 6, 7, 8); on the PostgreSQL instance: test_production_instance.py
- `psql ... -f restore.sql`: test_extract.py, test_drill.py; `deploy/sql/receiver-role.sql`:
  test_receiver_hardening.py (support/roles.py); `deploy/sql/rollback.sql` and the cutover
  runbook's steps: test_cutover.py
- `python -m bench.run`, `python -m bench.postprocess`: here, on tiny sizes
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from arb_pipeline.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOC_IDS = [d.relative_to(REPO).as_posix() for d in DOCS]
FENCE = re.compile(r"```([a-z]*)\n(.*?)```", flags=re.S)


def _text(doc: Path) -> str:
    return doc.read_text()


def _snippets(text: str) -> list[str]:
    """Inline code spans and lines of fenced code blocks."""
    lines = [line.split("#", 1)[0].strip() for _, block in FENCE.findall(text) for line in block.splitlines()]
    prose = FENCE.sub("", text)
    return [s for s in lines + re.findall(r"`([^`\n]+)`", prose) if s]


def _commands(program: str, text: str) -> list[list[str]]:
    found = []
    for snippet in _snippets(text):
        for part in re.split(r"&&|\|", snippet):
            part = part.strip().replace(".venv/bin/", "")
            if part.startswith(program + " "):
                try:
                    found.append(shlex.split(part))
                except ValueError:
                    found.append(part.split())
    return found


def _subparsers(parser):
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


def _materializations(text: str) -> list[list[str]]:
    return [c for c in _commands("dagster", text) if c[1:3] == ["asset", "materialize"] and "-m" in c]


def test_the_docs_show_the_command_line_and_the_materializations():
    everything = "\n".join(_text(d) for d in DOCS)
    assert len(_commands("arb", everything)) >= 15, "the docs show the arb command line"
    assert len(_materializations(everything)) >= 3, "the docs show backfills and reprocessing"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_arb_command_shown_exists_with_its_options(doc):
    subs = _subparsers(build_parser())
    for words in _commands("arb", _text(doc)):
        sub = words[1]
        if sub == "COMMAND" or sub in ("--help", "-h"):
            continue
        assert sub in subs, f"{doc.name} shows `arb {sub}`, which doesn't exist"
        known = _options(subs[sub]) | {"--help", "-h"}
        shown = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
        assert shown <= known, (
            f"`arb {sub}` has no option {sorted(shown - known)} ({doc.name}: {' '.join(words)})"
        )
        positional = [w for w in words[2:] if not w.startswith("-") and w != "..."]
        if sub == "generate" and positional:
            assert positional[0] in _subparsers(subs[sub]), f"no `arb generate {positional[0]}`"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_dagster_materialize_shown_names_a_real_group_and_partition(doc):
    for words in _materializations(_text(doc)):
        module = importlib.import_module(words[words.index("-m") + 1])
        selection = words[words.index("--select") + 1]
        group = selection.removeprefix("group:")
        assets = [
            a
            for a in module.defs.resolve_asset_graph().assets_defs
            if group in set(a.group_names_by_key.values())
        ]
        assert assets, f"{doc.name} selects {selection} in {module.__name__}, which has no such group"
        if "--partition" in words:
            key = words[words.index("--partition") + 1]
            if key != "KEY":
                partitions = assets[0].partitions_def
                assert partitions.has_partition_key(key), f"{key} is not a partition of {selection}"


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_the_scripts_shown_exist_and_take_their_options(doc):
    for words in _commands("bash", _text(doc)):
        if words[1].startswith("scripts/"):
            assert (REPO / words[1]).is_file(), f"{doc.name}: {words}"
            if words[1] == "scripts/demo.sh":  # it execs `arb demo "$@"`
                demo = _options(_subparsers(build_parser())["demo"])
                assert {w for w in words[2:] if w.startswith("--")} <= demo, f"{doc.name}: {words}"
    assert (REPO / ".ci/run").is_file()
    assert (REPO / "deploy/sql/receiver-role.sql").is_file()


# -- links and anchors -------------------------------------------------------------------------
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REF_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*(\S+)", flags=re.M)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.I)


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a link is a link."""
    return re.sub(r"`[^`\n]+`", "", FENCE.sub("", text))


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -N for repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", _text(doc)).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # a link counts by its text
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_relative_link_points_at_a_file_in_the_repository(doc):
    prose = _prose(_text(doc))
    targets = _LINK.findall(prose) + _REF_LINK.findall(prose)
    broken = []
    for target in targets:
        if _SCHEME.match(target):
            continue  # http(s), mailto: not ours to check
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.is_relative_to(REPO):
            broken.append(f"{target} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    assert not broken, f"{doc.name} links to: " + "; ".join(broken)


# -- paths, modules and the layout they describe ----------------------------------------------
_PATH = re.compile(r"(?<![\w/.$<-])((?:arb_pipeline|arb_pipeline_tests|bench|deploy|scripts|docs)/[\w.*/-]*)")
_MODULE = re.compile(r"(?<![\w/.])(arb_pipeline(?:\.[A-Za-z_]\w*)+)")
_TEST_FILE = re.compile(r"(?<![\w/])(test_\w+\.py)\b")


def _resolves(dotted: str) -> bool:
    """A module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            found = None
        if found is not None:
            obj = importlib.import_module(name)
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=DOC_IDS)
def test_every_path_and_module_named_exists(doc):
    text = _text(doc)
    missing = []
    for snippet in _snippets(text):
        for match in _PATH.finditer(snippet):
            if snippet[match.end() : match.end() + 1] in ("$", "<", "{"):
                continue  # a placeholder: deploy/workspace.$ARB_ROLE.yaml
            path = match.group(1).rstrip(".")
            if not any(REPO.glob(path.rstrip("/"))):
                missing.append(path)
        missing += [m for m in _MODULE.findall(snippet) if not _resolves(m)]
    tests = {p.name for p in (REPO / "arb_pipeline_tests").rglob("test_*.py")}
    missing += sorted(set(_TEST_FILE.findall(text)) - tests)
    assert not missing, f"{doc.name} names what doesn't exist: {missing}"


def _layout_block() -> list[str]:
    readme = _text(REPO / "README.md")
    block = next((b for _, b in FENCE.findall(readme) if b.startswith("arb_pipeline/\n")), None)
    assert block, "README draws the code layout in a code block starting with `arb_pipeline/`"
    return block.splitlines()


def test_the_readme_layout_is_the_package_layout():
    shown = set()
    for line in _layout_block()[1:]:
        if not line.startswith("  "):
            break  # the package's own entries end where the repository's folders start
        names = line.strip().split("  ")[0].split()
        shown.update(n for n in names if n.endswith("/") or n.endswith(".py"))
    package = REPO / "arb_pipeline"
    actual = {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    actual |= {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    assert shown == actual, (
        f"README's code layout lists {sorted(shown - actual)} that arb_pipeline/ lacks "
        f"and lacks {sorted(actual - shown)}"
    )


def test_the_architecture_diagram_names_real_modules():
    readme = _text(REPO / "README.md")
    diagram = next(b for lang, b in FENCE.findall(readme) if lang == "mermaid")
    package = REPO / "arb_pipeline"
    folders = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    missing = []
    for folder, name in re.findall(r"(?<![\w/])(\w+)/(\w*)", diagram):
        if folder not in folders:
            continue
        if name and not ((package / folder / f"{name}.py").is_file() or (package / folder / name).is_dir()):
            missing.append(f"{folder}/{name}")
    assert not missing, f"the README's diagram names modules that don't exist: {missing}"


# -- self-contained ----------------------------------------------------------------------------
_OUTSIDE = "../" + "shared"  # spelled in two parts so this file doesn't match itself
_SKIP_DIRS = {".git", ".venv", "node_modules", "test-artifacts", "var", "__pycache__"}


def test_the_repository_refers_to_nothing_outside_it():
    offenders = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(root, name)
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable: not documentation
            if _OUTSIDE in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"these files refer to {_OUTSIDE}, which a user of the product lacks: {offenders}"


# -- benchmarks ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "module, args, expect",
    [
        (
            "bench.run",
            ["--gigabytes", "0.01", "--window-rows", "1000", "--catchup-partials", "2"],
            [
                "complete dump-and-package / pg_dump to a file:",
                "complete cycle",
                "/ pg_dump | psql:",
                "partial extraction / psql COPY TO of the same rows:",
                "partial load (verify + load) / psql COPY FROM of the same rows",
            ],
        ),
        (
            "bench.postprocess",
            ["--events", "1000", "--window-events", "20", "--window-updates", "10"],
            ["full backfill of 1,000 events", "previous engine", "typical 5-minute window"],
        ),
    ],
)
def test_the_benchmarks_run_and_print_ratios_against_their_baselines(module, args, expect):
    assert f"python -m {module}" in _text(REPO / "docs" / "benchmarks.md")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in expect:
        assert text in proc.stdout, proc.stdout[-3000:]
