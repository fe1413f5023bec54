"""The demo run as a user runs it, `bash scripts/demo.sh`, in a clean checkout (a pytest plugin,
loaded by conftest.py).

Session fixtures, shared by test_demo.py and test_ui_browser.py so the demo starts once:

- ``demo_checkout``: a clean checkout in a temporary folder. By default the working tree's
  tracked and untracked-but-not-ignored files (what a commit of it would hold: no .venv,
  var/, caches), so uncommitted work is tested too; ``ARB_DEMO_SOURCE=head`` clones the
  committed HEAD instead. In CI the tree is a clean clone, so both are the same. The
  checkout's scripts/setup.sh builds its own .venv (uv, from its cache when warm).
- ``demo``: the demo running there (its own session, as from a terminal), once it has
  printed the UI address and a parity summary saying a load is parity-clean.
- ``demo_stopped``: the same demo after Ctrl-C (SIGINT to its process group), with its exit
  status and whatever it left running. Tests using ``demo`` run after all others and those
  using ``demo_stopped`` last (``pytest_collection_modifyitems`` below), so the demo runs
  only while its tests do and the UI tests see it live.

The demo's output and dagster log are copied to test-artifacts/demo/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arb_pipeline.dev.ports import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "demo"
READY_TIMEOUT_S = 600  # setup + PostgreSQL + dagster dev + the first partials: a few minutes
STOP_TIMEOUT_S = 120

UI_LINE = re.compile(r"Dagster UI: (http://\S+)")
STARTED_LINE = re.compile(
    r"started: PostgreSQL pid (\d+) on 127\.0\.0\.1:(\d+), .*dagster dev pid (\d+)"
    r"(?:, sshd pid (\d+))?"
)
TRANSPORT_LINE = re.compile(r"transport: (?:local folder (\S+)|SFTP to sshd pid \d+ on \S+, inbox (\S+))")
PARITY_LINE = re.compile(
    r"loaded (\d+) partial and (\d+) complete backups; parity through (.+?) UTC: (OK|DIFFERS)"
)


def make_checkout(dest: Path) -> Path:
    """A clean checkout of REPO in ``dest`` (see the module docstring)."""
    if os.environ.get("ARB_DEMO_SOURCE", "worktree") == "head":
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], check=True)
        return dest
    listed = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return dest


@dataclass
class DemoProcess:
    """`bash scripts/demo.sh ARGS` in ``checkout``, its output read line by line."""

    checkout: Path
    args: list[str]
    log_name: str = "demo"
    lines: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    port: int = 0
    started_at: float = 0.0  # time.time() at start: go-live is later (after setup)

    def start(self) -> "DemoProcess":
        self.port = free_port()
        self.started_at = time.time()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "VIRTUAL_ENV")}
        # Its own session, as from a terminal: Ctrl-C reaches its process group, not ours.
        self.proc = subprocess.Popen(
            ["bash", "scripts/demo.sh", "--port", str(self.port), *self.args],
            cwd=self.checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._changed = threading.Condition()
        self._read_all = False
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        with open(ARTIFACTS / f"{self.log_name}-stdout.log", "w") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._read_all = True
            self._changed.notify_all()

    def output(self, last: int = 40) -> str:
        return "\n".join(self.lines[-last:])

    def first(self, pattern: re.Pattern) -> re.Match | None:
        return next((m for m in map(pattern.search, list(self.lines)) if m), None)

    def wait_for(self, accept, timeout: float = READY_TIMEOUT_S) -> re.Match:
        """The first output line for which ``accept(line)`` gives a match; fails with the output
        if the demo exits or nothing matches within ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = accept(line)
                    if found:
                        return found
                seen = len(self.lines)
                if self._read_all:
                    pytest.fail(
                        f"the demo exited with {self.proc.returncode} before that; it printed:\n"
                        f"{self.output()}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the demo printed no such line within {timeout:.0f} s; it printed:\n{self.output()}"
                    )
                self._changed.wait(1)

    def wait_for_clean_load(self) -> re.Match:
        """The first parity summary that says a load, the seed complete and partial windows
        included, is parity-clean. On a busy machine the first partial can load before the
        seed complete (its `dagster asset materialize` starts slowly): that summary is clean
        too, but not yet what the tests look at."""

        def clean(line: str):
            m = PARITY_LINE.search(line)
            return m if m and m.group(4) == "OK" and int(m.group(1)) >= 1 and int(m.group(2)) >= 1 else None

        return self.wait_for(clean)

    # -- what it started ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.first(UI_LINE).group(1)

    @property
    def pg_port(self) -> int:
        return int(self.first(STARTED_LINE).group(2))

    def dsn(self, dbname: str) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname={dbname}"

    @property
    def inbox(self) -> Path:
        m = self.first(TRANSPORT_LINE)
        return Path(m.group(1) or m.group(2))

    def stop(self) -> "StopResult":
        """Ctrl-C: SIGINT to the demo's process group; then what it left behind."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        left = leftover_processes(self.checkout)
        ports = [
            p for p in (self.port, self.pg_port if self.first(STARTED_LINE) else 0) if p and port_open(p)
        ]
        for pid in left:  # never leak them into the rest of the session
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if code is None:
            self.proc.kill()
            self.proc.wait()
        self.save_logs()
        return StopResult(code, left, ports)

    def save_logs(self) -> None:
        log = self.checkout / "var" / "demo" / "dagster-dev.log"
        if log.exists():
            shutil.copy(log, ARTIFACTS / f"{self.log_name}-dagster-dev.log")


@dataclass
class StopResult:
    returncode: int | None
    leftover: dict[int, str]  # pid -> command line of processes still tied to the checkout
    open_ports: list[int]


def leftover_processes(folder: Path) -> dict[int, str]:
    """Processes whose command line names ``folder`` or whose working directory is in it
    (dagster's processes run in the checkout; PostgreSQL's in its data folder under var/)."""
    found = {}
    marker = str(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        if marker in cmdline or cwd == marker or cwd.startswith(marker + "/"):
            found[int(entry.name)] = cmdline or f"(cwd {cwd})"
    return found


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_checkout() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="arb-demo-"))
    try:
        yield make_checkout(base / "checkout")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_session(demo_checkout: Path) -> Iterator[dict]:
    """Holds the one demo run and, once stopped, its StopResult."""
    state: dict = {}
    try:
        yield state
    finally:
        running = state.get("demo")
        if running is not None and "stopped" not in state:
            result = running.stop()
            assert not result.leftover, f"the demo left processes running: {result.leftover}"


@pytest.fixture(scope="session")
def demo(demo_session: dict, demo_checkout: Path) -> DemoProcess:
    """The demo, up and parity-clean after at least one partial load."""
    if "stopped" in demo_session:
        pytest.fail("the demo was already stopped: tests using `demo_stopped` must run last")
    if "demo" not in demo_session:
        demo_session["demo"] = DemoProcess(demo_checkout, []).start()
        demo_session["demo"].wait_for_clean_load()
    return demo_session["demo"]


@pytest.fixture(scope="session")
def demo_stopped(demo_session: dict, demo: DemoProcess) -> tuple[DemoProcess, StopResult]:
    if "stopped" not in demo_session:
        demo_session["stopped"] = demo.stop()
    return demo, demo_session["stopped"]


def pytest_collection_modifyitems(items) -> None:
    # The demo's tests run together at the end, so the demo (dagster dev and live traffic on
    # two cores) runs only while they do; stopping it comes after every test that looks at it.
    def place(item) -> int:
        used = getattr(item, "fixturenames", ())
        return 2 if "demo_stopped" in used else 1 if "demo" in used else 0

    items.sort(key=place)
