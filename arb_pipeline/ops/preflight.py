"""Preflight: is this server set up to run its side of the pipeline? Plain Python.

Each check yields an :class:`Item`: the setting or dependency it is about, its status,
what was found, and the fix when it is not OK. ``arb check`` prints them on either
server; the sender's ``receiver_connectivity`` asset runs the destination part
(receiver reachable, host key, remote folder writable, free space) every hour.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arb_pipeline.settings import (
    DagsterInstanceSettings,
    DestinationSettings,
    MailSettings,
    ReceiverSettings,
    SenderSettings,
    SettingError,
    SharedSettings,
)

OK, WARN, FAIL, SKIP = "ok", "WARN", "FAIL", "skip"


@dataclass
class Item:
    name: str
    status: str
    detail: str
    fix: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
            "metrics": self.metrics,
        }


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


# --------------------------------------------------------------------------- destination


def destination_items(
    open_transport: Callable[[], Any],
    *,
    kind: str,
    host: str = "",
    port: int = 22,
    min_free_bytes: int = 0,
    connect_timeout: float = 10,
) -> list[Item]:
    """Receiver reachable, host key known and unchanged, remote folder writable, room on it."""
    from arb_pipeline.transport.base import TransportError

    items: list[Item] = []
    if kind == "sftp":
        t0 = time.monotonic()
        try:
            socket.create_connection((host, port), timeout=connect_timeout).close()
        except OSError as exc:
            items.append(
                Item(
                    "receiver reachable",
                    FAIL,
                    f"no TCP connection to {host}:{port}: {exc}",
                    "start sshd on the receiver (`systemctl start ssh`), check ARB_SFTP_HOST and "
                    "ARB_SFTP_PORT, and that no firewall blocks the port",
                )
            )
            return items
        ms = (time.monotonic() - t0) * 1000
        items.append(
            Item(
                "receiver reachable",
                OK,
                f"{host}:{port} accepts connections ({ms:.0f} ms)",
                metrics={"connect_ms": round(ms, 1)},
            )
        )
    try:
        transport = open_transport()
    except Exception as exc:  # a missing setting
        items.append(
            Item("destination settings", FAIL, str(exc), "set the ARB_SFTP_* / ARB_INBOX_DIR settings")
        )
        return items
    try:
        try:
            key = transport.server_key()
        except TransportError as exc:
            items.append(_session_failure(exc))
            return items
        items.append(Item("receiver host key", OK, f"{key} matches the known_hosts file"))
        try:
            transport.check_writable()
        except TransportError as exc:
            items.append(
                Item(
                    "remote folder writable",
                    FAIL,
                    str(exc),
                    "create the folder on the receiver, owned by the SFTP user (see README, Production)",
                )
            )
            return items
        items.append(Item("remote folder writable", OK, "a probe file was written and removed"))
        try:
            free = transport.disk_free()
        except TransportError as exc:
            items.append(Item("remote free space", WARN, f"unknown: {exc}"))
            return items
        if free is None:
            items.append(
                Item(
                    "remote free space",
                    WARN,
                    "unknown: the SFTP server does not offer statvfs@openssh.com",
                    "use OpenSSH's sftp server, or watch the receiver's disk there",
                )
            )
        elif free < min_free_bytes:
            items.append(
                Item(
                    "remote free space",
                    FAIL,
                    f"{_mb(free)} free, below ARB_REMOTE_MIN_FREE_MB ({_mb(min_free_bytes)})",
                    "free space on the receiver's inbox volume, or shorten "
                    "retention there (ARB_BKPS_LIFETIME)",
                    {"free_bytes": free},
                )
            )
        else:
            items.append(Item("remote free space", OK, f"{_mb(free)} free", metrics={"free_bytes": free}))
    finally:
        transport.close()
    return items


def _session_failure(exc) -> Item:
    import paramiko

    from arb_pipeline.transport.sftp_errors import UnknownHostKey

    cause = exc.__cause__
    if isinstance(cause, (paramiko.BadHostKeyException, UnknownHostKey)):
        return Item(
            "receiver host key",
            FAIL,
            str(exc),
            "compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the "
            "receiver; only if they match, replace the entry in ARB_SFTP_KNOWN_HOSTS",
        )
    if isinstance(cause, paramiko.AuthenticationException):
        return Item(
            "SFTP login", FAIL, str(exc), "put the sender's public key in the SFTP user's authorized_keys"
        )
    return Item("SFTP session", FAIL, str(exc), "check the ARB_SFTP_* settings and the receiver's sshd log")


# --------------------------------------------------------------------------- settings


def _problem_items(problems: list[SettingError]) -> Iterator[Item]:
    """A FAIL item for each setting whose value does not parse (the rest use its default)."""
    for e in problems:
        yield Item(e.setting, FAIL, e.problem, e.fix)


def _database(name: str, dsn: str, role: str) -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn
    from arb_pipeline.schema.migrate import migrations_for

    if not dsn:
        yield Item(
            name,
            FAIL,
            "not set",
            f"set {name} to the {role} database's libpq DSN, e.g. "
            "'host=127.0.0.1 dbname=transapp user=arb' (password via ~/.pgpass or the DSN)",
        )
        return
    try:
        with connect(dsn) as conn:
            version = conn.info.server_version
            try:
                done = {r[0] for r in conn.execute("SELECT version FROM arb_schema_migration")}
            except Exception:
                done = set()
    except ArbError as exc:
        yield Item(name, FAIL, str(exc), "start PostgreSQL or fix the DSN")
        return
    missing = [m.name for m in migrations_for(role) if m.version not in done]
    detail = f"{describe_dsn(dsn)}: PostgreSQL {version // 10000}.{version % 10000}"
    if missing:
        yield Item(
            name,
            FAIL,
            f"{detail}; {len(missing)} migration(s) not applied ({missing[0]} ...)",
            f"arb migrate --role {role}",
            {"server_version": version},
        )
    else:
        yield Item(name, OK, f"{detail}; migrations up to date", metrics={"server_version": version})


def _folder(name: str, path: str, *, writable: bool, min_free: int = 0, create_hint: str = "") -> Item:
    if not path:
        return Item(name, FAIL, "not set", f"set {name}")
    p = Path(path)
    if not p.is_dir():
        return Item(
            name,
            FAIL,
            f"{p} does not exist or is not a folder",
            create_hint or f"mkdir -p {p} and give it to the pipeline's user",
        )
    if not os.access(p, os.R_OK | os.X_OK) or (writable and not os.access(p, os.W_OK)):
        return Item(
            name,
            FAIL,
            f"{p} is not {'writable' if writable else 'readable'} by uid {os.getuid()}",
            "chown the folder to the pipeline's user",
        )
    free = shutil.disk_usage(p).free
    if min_free and free < min_free:
        return Item(
            name,
            FAIL,
            f"{p}: {_mb(free)} free, below {_mb(min_free)}",
            "free space on that volume (or lower ARB_MIN_FREE_MB)",
            {"free_bytes": free},
        )
    return Item(name, OK, f"{p} ({_mb(free)} free)", metrics={"free_bytes": free})


def _program(name: str, program: str, why: str, fix: str) -> tuple[Item, str | None]:
    found = shutil.which(program)
    if not found:
        return Item(name, FAIL, f"{program!r} not found ({why})", fix), None
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return Item(name, FAIL, f"{found} does not run: {exc}", fix), None
    return Item(name, OK, f"{found}: {out.splitlines()[0] if out else 'found'}"), out


def _pg_major(version_text: str | None) -> int | None:
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text or "")
    return int(match.group(1)) if match else None


def _common_items() -> Iterator[Item]:
    yield from _mail_items()
    problems: list[SettingError] = []
    shared = SharedSettings.from_env(problems=problems)
    yield from _problem_items(problems)
    bad = {e.setting for e in problems}
    for name, value in (
        ("ARB_GO_LIVE", shared.go_live.isoformat()),
        ("ARB_PARTIAL_MINUTES", f"{shared.partial_minutes} min"),
        ("ARB_TIMEZONE", shared.timezone),
    ):
        if name not in bad:
            yield Item(name, OK, value)
    yield from _dagster_items()


def _mail_items() -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.ops.alerts import Mailer

    problems: list[SettingError] = []
    mail = MailSettings.from_env(problems=problems)
    if problems:  # no mail check with a setting that is not what the admin wrote
        yield from _problem_items(problems)
        return
    if not mail.admins:
        yield Item(
            "ARB_ADMINS",
            FAIL,
            "not set: failure and freshness emails go nowhere",
            "set ARB_ADMINS to the admins' addresses, comma-separated (the original's ADMINS)",
        )
    else:
        yield Item("ARB_ADMINS", OK, ", ".join(mail.admins))
    try:
        detail = Mailer(mail).check()
        login = f", login as {mail.user}" if mail.user else ", no login"
        yield Item("ARB_SMTP_HOST", OK, f"{detail}; security {mail.security}{login}")
    except ArbError as exc:
        yield Item(
            "ARB_SMTP_HOST",
            FAIL,
            str(exc),
            "set ARB_SMTP_HOST/PORT/SECURITY (and USER/PASSWORD if the "
            "server wants a login) to a mail server that accepts the mail",
        )
    if mail.ui_base_url:
        yield Item("ARB_UI_BASE_URL", OK, mail.ui_base_url)
    else:
        yield Item(
            "ARB_UI_BASE_URL",
            WARN,
            "not set: alert emails carry run ids, not links",
            "set ARB_UI_BASE_URL to the Dagster UI's address, e.g. https://dagster.example.org",
        )
    yield Item(
        "ARB_ALERT_INTERVAL_MINUTES",
        OK,
        f"at most one failure email per job every {mail.interval_minutes:g} min",
    )


def _dagster_items() -> Iterator[Item]:
    problems: list[SettingError] = []
    instance = DagsterInstanceSettings.from_env(problems=problems)
    yield from _problem_items(problems)
    versions = {}
    for dist in ("dagster", "dagster-webserver", "dagster-postgres"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    core = versions["dagster"] or "?"
    lib = versions["dagster-postgres"]
    ok_pair = False
    if lib and core != "?":
        c, l_ = core.split("."), lib.split(".")
        ok_pair = len(c) >= 3 and len(l_) >= 3 and int(l_[1]) == int(c[1]) + 16 and l_[2] == c[2]
    text = ", ".join(f"{k} {v or 'missing'}" for k, v in versions.items())
    yield Item(
        "dagster packages",
        OK if ok_pair and versions["dagster-webserver"] == core else FAIL,
        text,
        "" if ok_pair else "install the locked versions: .venv/bin/pip install -r requirements.lock",
    )
    home = instance.home
    if not home:
        yield Item(
            "DAGSTER_HOME",
            WARN,
            "not set: the CLI uses a temporary instance, wiped on exit",
            "set DAGSTER_HOME to a folder holding dagster.yaml (deploy/dagster.postgres.yaml in production)",
        )
        return
    config = Path(home) / "dagster.yaml"
    if not config.is_file():
        yield Item(
            "DAGSTER_HOME",
            WARN,
            f"{home} has no dagster.yaml: SQLite storage, default limits",
            f"cp deploy/dagster.postgres.yaml {config}",
        )
        return
    text = config.read_text()
    if "postgres" not in text:
        yield Item(
            "DAGSTER_HOME",
            WARN,
            f"{config}: SQLite storage (fine for one machine)",
            "production uses dagster-postgres storage: deploy/dagster.postgres.yaml",
        )
        return
    yield from _dagster_postgres(config, instance)


def _dagster_postgres(config: Path, instance: DagsterInstanceSettings) -> Iterator[Item]:
    import psycopg

    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn

    needed = (("DAGSTER_PG_HOST", instance.pg_host), ("DAGSTER_PG_USERNAME", instance.pg_username))
    missing = [name for name, value in (*needed, ("DAGSTER_PG_DB", instance.pg_db)) if not value]
    if missing:
        yield Item(
            "DAGSTER_HOME",
            FAIL,
            f"{config} uses PostgreSQL storage but {', '.join(missing)} not set",
            "set the DAGSTER_PG_* variables (the password in DAGSTER_PG_PASSWORD) for every Dagster service",
        )
        return
    dsn = psycopg.conninfo.make_conninfo(
        host=instance.pg_host,
        port=instance.pg_port,
        user=instance.pg_username,
        password=instance.pg_password,
        dbname=instance.pg_db,
    )
    try:
        with connect(dsn):
            pass
    except ArbError as exc:
        yield Item(
            "DAGSTER_HOME",
            FAIL,
            f"{config}: {exc}",
            "create the Dagster database and role (README, Production)",
        )
        return
    yield Item("DAGSTER_HOME", OK, f"{config}: PostgreSQL storage at {describe_dsn(dsn)}")


def sender_items(remote: bool = True) -> Iterator[Item]:
    """Everything the sender needs, in order."""
    from arb_pipeline.errors import ArbError

    problems: list[SettingError] = []
    sender = SenderSettings.from_env(problems=problems)
    destination = DestinationSettings.from_env(problems=problems)
    yield from _problem_items(problems)
    bad = {e.setting for e in problems}
    yield from _database("ARB_SENDER_DSN", sender.dsn, "sender")
    server_major = None
    try:
        from arb_pipeline.pg.connect import connect

        if sender.dsn:
            with connect(sender.dsn) as conn:
                server_major = conn.info.server_version // 10000
    except ArbError:
        pass
    pg_dump = sender.pg_dump
    item, out = _program(
        "ARB_PG_DUMP",
        pg_dump,
        "dumps the schema of complete backups",
        "install postgresql-client of the server's major version, or set ARB_PG_DUMP to its pg_dump",
    )
    major = _pg_major(out)
    if item.status == OK and server_major and major and major < server_major:
        item = Item(
            "ARB_PG_DUMP",
            FAIL,
            f"{item.detail}: older than the server ({server_major})",
            f"install postgresql-client-{server_major} and point ARB_PG_DUMP at its pg_dump",
        )
    yield item
    psql = Path(pg_dump).with_name("psql") if Path(pg_dump).name != pg_dump else Path("psql")
    yield _program(
        "psql (beside pg_dump)",
        str(psql),
        "streams complete backups' tables",
        "install postgresql-client (psql comes with pg_dump)",
    )[0]
    yield _folder("ARB_SENDER_MEDIA_DIR", sender.media_dir, writable=False)
    staging = sender.staging_dir
    if not Path(staging).exists():
        parent = Path(staging).parent
        yield (
            Item("ARB_STAGING_DIR", OK, f"{staging} will be created in {parent}")
            if os.access(parent, os.W_OK)
            else Item(
                "ARB_STAGING_DIR",
                FAIL,
                f"{staging} does not exist and {parent} is not writable",
                f"mkdir -p {staging} and give it to the pipeline's user",
            )
        )
    else:
        yield _folder("ARB_STAGING_DIR", staging, writable=True)
    if "ARB_COMPLETE_AT" not in bad:
        timezone = SharedSettings.from_env(problems=[]).timezone  # a bad one: a FAIL of its own
        yield Item("ARB_COMPLETE_AT", OK, f"daily at {sender.complete_at:%H:%M} {timezone}")
    if "ARB_TRANSPORT" not in bad:
        yield from _transport_items(remote, destination)
    yield from _common_items()


def _transport_items(remote: bool, d: DestinationSettings) -> Iterator[Item]:
    if d.kind == "local":
        yield Item("ARB_TRANSPORT", OK, "local folder (one machine)")
        yield _folder("ARB_INBOX_DIR", d.local_dir, writable=True)
        return
    yield Item("ARB_TRANSPORT", OK, "sftp")
    missing = d.missing_sftp()
    for name in missing:
        yield Item(name, FAIL, "not set", "see docs/settings.md")
    if missing:
        return
    key = Path(d.key_file)
    if not key.is_file():
        yield Item(
            "ARB_SFTP_KEY_FILE",
            FAIL,
            f"{key} does not exist",
            f"ssh-keygen -t ed25519 -N '' -f {key}; put {key}.pub in the receiver's authorized_keys",
        )
    elif key.stat().st_mode & 0o077:
        yield Item("ARB_SFTP_KEY_FILE", FAIL, f"{key} is readable by group/others", f"chmod 600 {key}")
    else:
        yield Item("ARB_SFTP_KEY_FILE", OK, str(key))
    known = Path(d.known_hosts_file)
    host, port = d.host, d.port
    if not known.is_file():
        yield Item(
            "ARB_SFTP_KNOWN_HOSTS",
            FAIL,
            f"{known} does not exist",
            f"ssh-keyscan -p {port} {host} >> {known}, after checking the fingerprint with the "
            "receiver's admin",
        )
    else:
        yield Item("ARB_SFTP_KNOWN_HOSTS", OK, str(known))
    if not remote:
        yield Item("receiver", SKIP, "remote checks skipped (--no-remote)")
        return
    from arb_pipeline.transport.sftp import SftpTransport

    def open_transport():
        return SftpTransport(
            host=host,
            port=port,
            username=d.username,
            key_file=str(key),
            known_hosts_file=str(known),
            remote_dir=d.remote_dir,
            key_passphrase=d.key_passphrase or None,
            retries=0,
        )

    yield from destination_items(
        open_transport,
        kind="sftp",
        host=host,
        port=port,
        min_free_bytes=int(d.min_free_mb * 1024 * 1024),
    )


def receiver_items() -> Iterator[Item]:
    """Everything the receiver needs, in order."""
    problems: list[SettingError] = []
    receiver = ReceiverSettings.from_env(problems=problems)
    yield from _problem_items(problems)
    yield from _database("ARB_RECEIVER_DSN", receiver.dsn, "receiver")
    min_free = int(receiver.min_free_mb * 1024 * 1024)
    yield _folder(
        "ARB_INBOX_DIR",
        receiver.inbox_dir,
        writable=True,
        min_free=min_free,
        create_hint="create it inside the SFTP user's chroot, owned by that user (README, Production)",
    )
    yield _folder(
        "ARB_RECEIVER_MEDIA_DIR",
        receiver.media_dir,
        writable=True,
        min_free=min_free,
    )
    yield _folder("ARB_QUARANTINE_DIR", receiver.quarantine_dir, writable=True)
    yield _program(
        "ARB_PSQL",
        receiver.psql,
        "the restore drill runs restore.sql with it",
        "install postgresql-client, or set ARB_PSQL to psql's path",
    )[0]
    yield _program("zstd", "zstd", "restore.sql decompresses table files with it", "apt-get install zstd")[0]
    yield from _drill_items(receiver.drill_dsn)
    yield from _common_items()


def _drill_items(dsn: str) -> Iterator[Item]:
    from arb_pipeline.errors import ArbError
    from arb_pipeline.pg.connect import connect, describe_dsn

    if not dsn:
        yield Item(
            "ARB_DRILL_DSN",
            FAIL,
            "not set: the restore drill can't run",
            "set ARB_DRILL_DSN to a maintenance connection (dbname=postgres) of a role with CREATEDB",
        )
        return
    try:
        with connect(dsn) as conn:
            can = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except ArbError as exc:
        yield Item("ARB_DRILL_DSN", FAIL, str(exc), "fix the DSN or start the server")
        return
    if not (can and can[0]):
        yield Item(
            "ARB_DRILL_DSN",
            FAIL,
            f"{describe_dsn(dsn)}: the role may not create databases",
            "ALTER ROLE <role> CREATEDB (the drill creates and drops a scratch database)",
        )
    else:
        yield Item("ARB_DRILL_DSN", OK, f"{describe_dsn(dsn)}: may create the scratch database")


def run_checks(role: str, remote: bool = True) -> list[Item]:
    items: list[Item] = []
    gen = sender_items(remote) if role == "sender" else receiver_items()
    for item in gen:
        items.append(item)
    return items
