"""A throwaway PostgreSQL cluster on 127.0.0.1 for the demo and the tests.

Uses the system's PostgreSQL binaries when present (Debian's /usr/lib/postgresql/N/bin),
otherwise the ones bundled in the ``pgserver`` wheel, so the demo works on a machine
with only Python. Run as any user but root, the cluster is that user's (initdb needs no
privileges; CI runs the suite so). initdb and postgres refuse to run as root: as root the
cluster runs as the ``postgres`` user (created as a system user when missing).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from arb_pipeline.dev.ports import free_port

SERVICE_USER = "postgres"
FAST_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=100 -c shared_buffers=128MB"
)


def find_bin_dir() -> Path:
    """Newest system PostgreSQL, else the pgserver wheel's bundled build."""
    env = os.environ.get("ARB_PG_BIN")
    if env:
        return Path(env)
    system = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if system:
        return Path(system[-1]).parent
    try:
        import pgserver  # noqa: F401  (only for its bundled binaries)
    except ImportError as exc:
        raise RuntimeError("no PostgreSQL found: install postgresql or `pip install pgserver`") from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
        )
        return pwd.getpwnam(SERVICE_USER)


@dataclass
class LocalPostgres:
    """One cluster: ``start()``, ``create_database()``, ``dsn()``, ``stop()``."""

    base_dir: Path
    port: int = 0
    bin_dir: Path = field(default_factory=find_bin_dir)
    user: str = "postgres"
    # Server settings on top of FAST_SETTINGS (later -c wins), e.g. {"wal_level": "logical"}
    # for change capture; values are passed to pg_ctl's -o, so no spaces or quotes.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def _run_as_service(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", SERVICE_USER, "--", *args]
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self) -> "LocalPostgres":
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if os.geteuid() == 0:
            svc = _ensure_service_user()
            # The service user must reach the folder; keep the rest of the path as it is.
            os.chown(self.base_dir, svc.pw_uid, svc.pw_gid)
            for parent in self.base_dir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run_as_service(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base_dir} {FAST_SETTINGS}"
        for name, value in self.settings.items():
            if not value or any(ch.isspace() or ch in "'\"\\" for ch in f"{name}{value}"):
                raise ValueError(f"server setting {name}={value!r}: no spaces or quotes in names and values")
            opts += f" -c {name}={value}"
        self._run_as_service(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "start",
            ]
        )
        return self

    @property
    def pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return None
        return int(pidfile.read_text().split("\n", 1)[0])

    def stop(self) -> None:
        if self.pid is None:
            return
        self._run_as_service(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres", scheme: str = "postgresql") -> str:
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str, *, drop_existing: bool = False) -> str:
        import psycopg

        from arb_pipeline.pg.quote import quote_ident

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if drop_existing:
                conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        return self.dsn(name)

    def tool(self, name: str) -> str:
        """Path of a client program (pg_dump, pg_restore, psql) matching the server."""
        path = self.bin_dir / name
        return str(path) if path.exists() else (shutil.which(name) or name)
