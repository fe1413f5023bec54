"""The layering rules, enforced on the source: a pure core and a thin Dagster shell.

- Dagster (``dagster``, ``dagster_*``) is imported only by the shell: ``sender/``, ``receiver/``
  and ``dagster_common/``. ``dev/`` runs Dagster as a process (``dagster dev``) and imports none.
- ``sender/`` and ``receiver/`` never import each other (they are two code locations on two servers).
- The core (every other module, ``cli/`` and ``dev/`` included) never imports the shell.
- ``dagster_common/`` serves both code locations, so it imports neither.
- No test module imports another test module or a conftest: what tests share is in support/.

Every ``import`` and ``from ... import`` counts, also one inside a function: a lazy import
still loads the package when that code runs. Then the real ``arb`` entry point is run to check
that ``arb --help`` and ``arb restore`` load no Dagster at all.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import arb_pipeline

PACKAGE_DIR = Path(arb_pipeline.__file__).resolve().parent
SHELL = ("sender", "receiver", "dagster_common")  # subpackages that may import Dagster
ARB = Path(sys.executable).with_name("arb")


@dataclass(frozen=True)
class Violation:
    file: Path
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported} ({self.rule})"


def _is_dagster(name: str) -> bool:
    top = name.split(".", 1)[0]
    return top == "dagster" or top.startswith("dagster_")


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[list[str]]:
    """The dotted names an import statement (or an import_module("literal") call) loads, one list
    per imported thing: ``from pkg import sub`` loads ``pkg`` and maybe the module ``pkg.sub``."""
    if isinstance(node, ast.Import):
        return [[alias.name] for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the importing module's package
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        return [[base, f"{base}.{alias.name}"] for alias in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [[node.args[0].value]]
    return []


def _layer(module: str, package: str) -> str:
    """``sender``, ``receiver``, ``dagster_common`` or ``core``, for a module of ``package``."""
    parts = module.split(".")
    if parts[0] == package and len(parts) > 1 and parts[1] in SHELL:
        return parts[1]
    return "core"


def _broken_rule(source_layer: str, name: str, package: str) -> str | None:
    target = _layer(name, package) if name.split(".")[0] == package else None
    if _is_dagster(name) and source_layer == "core":
        return "Dagster outside sender/, receiver/, dagster_common/"
    if target in SHELL and source_layer == "core":
        return f"the core imports the Dagster shell ({target}/)"
    if {source_layer, target} == {"sender", "receiver"}:
        return "sender/ and receiver/ import each other"
    if source_layer == "dagster_common" and target in ("sender", "receiver"):
        return "dagster_common/ serves both code locations and imports neither"
    return None


def import_violations(package_dir: Path) -> list[Violation]:
    """Every import in the package at ``package_dir`` that breaks a layering rule."""
    package = package_dir.name
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        source_layer = _layer(module, package)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for names in _imported_names(node, module, is_package):
                # the first name that breaks a rule: `from x.receiver import a` is reported once
                for name in names:
                    rule = _broken_rule(source_layer, name, package)
                    if rule:
                        found.append(Violation(path.relative_to(package_dir.parent), node.lineno, name, rule))
                        break
    return list(dict.fromkeys(found))  # `from x import a, b` breaks a rule once


def test_the_package_keeps_its_layers():
    violations = import_violations(PACKAGE_DIR)
    assert not violations, "layering rules broken:\n" + "\n".join(map(str, violations))


def test_no_test_module_imports_another():
    tests_dir = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests_dir.rglob("*.py")):
        rel = path.relative_to(tests_dir.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for names in _imported_names(node, module, is_package):
                last = [n.rsplit(".", 1)[-1] for n in names if n.startswith(tests_dir.name + ".")]
                if any(part.startswith("test_") or part == "conftest" for part in last):
                    found.append(f"{path.relative_to(tests_dir.parent)}:{node.lineno}: imports {names[-1]}")
    assert not found, "tests import other tests (move what they share to support/):\n" + "\n".join(found)


def test_the_walker_reports_file_line_and_name_of_each_violation(tmp_path):
    pkg = tmp_path / "fakepkg"
    files = {
        "__init__.py": "",
        "extract/__init__.py": "",
        "extract/build.py": "import os\n\n\ndef later():\n    import dagster as dg\n    return dg\n",
        "pg/__init__.py": "from fakepkg.dagster_common import partitions\n",
        "cli/main.py": "import importlib\n\nimportlib.import_module('dagster_postgres')\n",
        "dagster_common/__init__.py": "",
        "dagster_common/partitions.py": "import dagster\nfrom . import helpers\n",
        "dagster_common/helpers.py": "from ..sender import assets\n",
        "sender/__init__.py": "",
        "sender/assets.py": "import dagster\nfrom fakepkg.extract.build import later\n",
        "receiver/__init__.py": "",
        "receiver/sensors.py": "from fakepkg import sender\nfrom .. import receiver\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = {(str(v.file), v.line, v.imported) for v in import_violations(pkg)}
    assert found == {
        ("fakepkg/extract/build.py", 5, "dagster"),  # inside a function
        ("fakepkg/pg/__init__.py", 1, "fakepkg.dagster_common"),
        ("fakepkg/cli/main.py", 3, "dagster_postgres"),
        ("fakepkg/dagster_common/helpers.py", 1, "fakepkg.sender"),  # relative
        ("fakepkg/receiver/sensors.py", 1, "fakepkg.sender"),  # a submodule by `from pkg import`
    }
    message = "\n".join(map(str, import_violations(pkg)))
    assert "fakepkg/extract/build.py:5: imports dagster (Dagster outside" in message


def _modules_loaded_by(*args: str, cwd: Path) -> set[str]:
    """Run the installed ``arb`` with ARGS; every module it imported (Python's -X importtime)."""
    assert ARB.is_file(), f"no {ARB}: run scripts/setup.sh"
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([str(ARB), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 2), proc.stderr[-3000:]
    modules = {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    assert "arb_pipeline.cli.main" in modules, proc.stderr[-3000:]
    return modules


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["restore", "--help"],
        # past argparse into the command, so its lazy imports (the restore code) load; the
        # empty inbox then ends it with exit status 2
        ["restore", "--inbox", "{inbox}", "--at", "latest", "--dry-run"],
    ],
    ids=["arb --help", "arb restore --help", "arb restore --dry-run"],
)
def test_the_arb_command_loads_no_dagster(args, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "complete").mkdir(parents=True)
    (inbox / "partial").mkdir()
    args = [a.format(inbox=inbox) for a in args]
    modules = _modules_loaded_by(*args, cwd=tmp_path)
    if "--dry-run" in args:
        assert "arb_pipeline.restore.pitr" in modules
    dagster = sorted(m for m in modules if _is_dagster(m))
    assert not dagster, f"`arb {' '.join(args)}` loaded Dagster: {dagster[:10]}"
