"""Versioned SQL migrations owned by the project.

Files live in ``schema/common`` (both servers) and ``schema/<role>``; they are applied
in order of their numeric prefix, each in its own transaction, and recorded with their
sha256 in ``arb_schema_migration``. Applying twice is a no-op; an applied file whose
content changed is refused rather than silently skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from arb_pipeline.errors import SchemaError
from arb_pipeline.pg.connect import connect

ROLES = ("sender", "receiver")

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS arb_schema_migration (
    version text PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_for(role: str) -> list[Migration]:
    if role not in ROLES:
        raise SchemaError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    root = resources.files("arb_pipeline") / "schema"
    found: dict[str, Migration] = {}
    for folder in ("common", role):
        folder_path = root / folder
        if not folder_path.is_dir():
            continue
        for entry in folder_path.iterdir():
            if not entry.name.endswith(".sql"):
                continue
            version = entry.name.split("_", 1)[0]
            if version in found:
                raise SchemaError(
                    f"two migrations share version {version}: {found[version].name} and {entry.name}"
                )
            found[version] = Migration(version, f"{folder}/{entry.name}", entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def apply_migrations(dsn: str, role: str) -> list[str]:
    """Apply the pending migrations of ``role``; return the names applied."""
    applied_now: list[str] = []
    # Autocommit, so each conn.transaction() below is a real transaction, not a savepoint.
    with connect(dsn, autocommit=True) as conn:
        # One migrator at a time per database.
        conn.execute("SELECT pg_advisory_lock(hashtext('arb_schema_migration'))")
        conn.execute(LEDGER_DDL)
        done = dict(conn.execute("SELECT version, sha256 FROM arb_schema_migration").fetchall())
        for mig in migrations_for(role):
            if mig.version in done:
                if done[mig.version] != mig.sha256:
                    raise SchemaError(
                        f"migration {mig.name} was changed after it was applied to {role} database; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            with conn.transaction():
                conn.execute(mig.sql)
                conn.execute(
                    "INSERT INTO arb_schema_migration (version, name, sha256) VALUES (%s, %s, %s)",
                    (mig.version, mig.name, mig.sha256),
                )
            applied_now.append(mig.name)
        conn.execute("SELECT pg_advisory_unlock(hashtext('arb_schema_migration'))")
    return applied_now
