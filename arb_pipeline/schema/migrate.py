"""Versioned SQL migrations, in two layers, and the catalog's per-table objects.

- **app** (``schema/app/<catalog's bootstrap_schema>/``): the app's own tables, as the
  project creates them for the demo and the tests. They run only on a database that has
  none of the catalog's tables; where the app's own migrations (Django) created them
  already, they are recorded as *adopted* and never run. A database with some of the
  tables and not others is refused, naming them.
- **pipeline** (``schema/pipeline/`` and ``schema/postprocess/<catalog's postprocess>/``):
  the pipeline's own objects (ledger, staging schema, postprocessing tables) and, where
  missing, the receiver app's own part (TranSappViz's columns and reference tables), written
  to run on either kind of database: they add, and never change what the app created.

Files live in ``<layer folder>/common`` (both servers) and ``<layer folder>/<role>``; they
are applied in order of their numeric prefix and recorded with their sha256 in
``arb_schema_migration``. Applying twice is a no-op; an applied file whose content changed
is refused rather than silently skipped. A pending migration that creates an extension
(``CREATE EXTENSION IF NOT EXISTS``: PostGIS for TranSappViz's part of the receiver, 0200)
is checked before anything runs: the server must have it and, unless the database has it
already, the migrating role must be a superuser. After them, schema/catalog_sync.py brings the
per-table objects in line with the catalog (``arb_synced_at`` on each replicated table,
the role's table list).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

from arb_pipeline.catalog import Catalog, current_catalog
from arb_pipeline.errors import SchemaError
from arb_pipeline.pg.connect import connect
from arb_pipeline.schema import catalog_sync

ROLES = ("sender", "receiver")
APP, PIPELINE = "app", "pipeline"
APPLY, ADOPT = "apply", "adopt"

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS arb_schema_migration (
    version text PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- 'applied', or 'adopted': an app migration whose tables the app had created already.
ALTER TABLE arb_schema_migration ADD COLUMN IF NOT EXISTS how text NOT NULL DEFAULT 'applied'
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str  # its path under schema/
    sql: str
    layer: str  # APP or PIPELINE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def extensions(self) -> list[str]:
        """The extensions it creates, which plan_migrations checks for before anything runs."""
        return _CREATE_EXTENSION.findall(self.sql)


_CREATE_EXTENSION = re.compile(r"^CREATE EXTENSION IF NOT EXISTS (\w+)", re.MULTILINE)
# The Debian package that installs an extension on the PostgreSQL server ({major}: its version).
EXTENSION_PACKAGES = {"postgis": "postgresql-{major}-postgis-3"}


def _folders(role: str, catalog: Catalog) -> list[tuple[str, str]]:
    found = []
    if catalog.bootstrap_schema:
        found += [(APP, f"app/{catalog.bootstrap_schema}/{side}") for side in ("common", role)]
    found += [(PIPELINE, f"pipeline/{side}") for side in ("common", role)]
    if catalog.postprocess:
        found += [(PIPELINE, f"postprocess/{catalog.postprocess}/{side}") for side in ("common", role)]
    return found


def migrations_for(role: str, catalog: Catalog | None = None) -> list[Migration]:
    """The migrations of ``role`` under ``catalog`` (default: the configured one), in order."""
    if role not in ROLES:
        raise SchemaError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    catalog = catalog or current_catalog()
    root = resources.files("arb_pipeline") / "schema"
    found: dict[str, Migration] = {}
    for layer, folder in _folders(role, catalog):
        folder_path = root.joinpath(*folder.split("/"))
        if not folder_path.is_dir():
            continue
        for entry in folder_path.iterdir():
            if not entry.name.endswith(".sql"):
                continue
            version = entry.name.split("_", 1)[0]
            if version in found:
                raise SchemaError(
                    f"two migrations share version {version}: {found[version].name} and {folder}/{entry.name}"
                )
            found[version] = Migration(version, f"{folder}/{entry.name}", entry.read_text("utf-8"), layer)
    migrations = [found[v] for v in sorted(found)]
    # Every app migration runs before the pipeline's, which may build on its tables.
    last_app = max((i for i, m in enumerate(migrations) if m.layer == APP), default=-1)
    first_pipeline = min(
        (i for i, m in enumerate(migrations) if m.layer == PIPELINE), default=len(migrations)
    )
    if last_app > first_pipeline:
        raise SchemaError(
            f"migration {migrations[last_app].name} (app) is numbered after "
            f"{migrations[first_pipeline].name} (pipeline): app migrations come first"
        )
    return migrations


@dataclass
class MigrationPlan:
    """What ``arb migrate`` would do to one database, decided before any of it is done."""

    role: str
    catalog: Catalog
    steps: list[tuple[str, Migration]] = field(default_factory=list)  # (APPLY or ADOPT, migration)
    sync: list[catalog_sync.Change] = field(default_factory=list)

    @property
    def to_apply(self) -> list[str]:
        return [m.name for how, m in self.steps if how == APPLY]

    @property
    def to_adopt(self) -> list[str]:
        return [m.name for how, m in self.steps if how == ADOPT]

    @property
    def up_to_date(self) -> bool:
        return not self.steps and not self.sync

    def lines(self) -> list[str]:
        out = [f"apply  {name}" for name in self.to_apply]
        out += [f"adopt  {name} (the app's tables exist: recorded, not run)" for name in self.to_adopt]
        out += [f"sync   {change.describe()}" for change in self.sync]
        return out or ["nothing to do: up to date"]


def _ledger(conn) -> dict[str, str]:
    exists = conn.execute("SELECT to_regclass('public.arb_schema_migration') IS NOT NULL").fetchone()[0]
    if not exists:
        return {}
    return dict(conn.execute("SELECT version, sha256 FROM arb_schema_migration").fetchall())


def _existing_tables(conn, names: tuple[str, ...]) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (list(names),),
    )
    return {r[0] for r in rows}


def plan_migrations(conn, role: str, catalog: Catalog | None = None) -> MigrationPlan:
    """Decide what migrating ``role``'s database on ``conn`` takes; change nothing."""
    catalog = catalog or current_catalog()
    plan = MigrationPlan(role, catalog)
    done = _ledger(conn)
    pending = []
    for mig in migrations_for(role, catalog):
        if mig.version not in done:
            pending.append(mig)
        elif done[mig.version] != mig.sha256:
            raise SchemaError(
                f"migration {mig.name} was changed after it was applied to {role} database; "
                "add a new migration instead of editing an applied one"
            )
    present = _existing_tables(conn, catalog.table_names)
    missing = [t for t in catalog.table_names if t not in present]
    app_pending = [m for m in pending if m.layer == APP]
    if app_pending and not present:
        plan.steps += [(APPLY, m) for m in app_pending]  # an empty database: the project creates the app
    else:
        if missing:
            raise SchemaError(
                f"the {role} database has {len(present)} of the catalog's {len(catalog.table_names)} "
                f"tables; missing: {', '.join(missing)}. Create them with the app's own migrations "
                f"(Django: `manage.py migrate`), or remove them from the catalog ({catalog.path}); "
                "nothing was changed"
            )
        plan.steps += [(ADOPT, m) for m in app_pending]
    plan.steps += [(APPLY, m) for m in pending if m.layer == PIPELINE]
    for mig in (m for _, m in plan.steps if m.layer == PIPELINE):
        for extension in mig.extensions:
            _check_extension(conn, extension, mig)
    # Per-table objects can only be planned against tables that exist; on an empty
    # database the sync after the app migrations finds them.
    plan.sync = catalog_sync.changes(conn, role, catalog) if not missing else []
    return plan


def _check_extension(conn, extension: str, mig: Migration) -> None:
    """Refuse, before anything is changed, a migration whose extension can't be created."""
    installed, available, superuser, major = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = %(e)s), "
        "EXISTS (SELECT FROM pg_available_extensions WHERE name = %(e)s), "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "current_setting('server_version_num')::int / 10000",
        {"e": extension},
    ).fetchone()
    if installed:
        return
    create = f"then, as a PostgreSQL superuser in this database: CREATE EXTENSION {extension};"
    if not available:
        package = EXTENSION_PACKAGES.get(extension, extension).format(major=major)
        raise SchemaError(
            f"migration {mig.name} needs the {extension} extension, which is not installed on this "
            f"PostgreSQL {major} server: install the Debian package {package} "
            f"(apt-get install {package}) on the database server, {create} "
            "and run arb migrate again; nothing was changed"
        )
    if not superuser:
        raise SchemaError(
            f"migration {mig.name} needs the {extension} extension in this database, and role "
            f"{conn.info.user} may not create it: as a PostgreSQL superuser in this database run "
            f"CREATE EXTENSION {extension}; and run arb migrate again; nothing was changed"
        )


@dataclass(frozen=True)
class MigrationResult:
    applied: list[str]
    adopted: list[str]
    synced: list[str]


def apply_migrations(dsn: str, role: str, catalog: Catalog | None = None) -> MigrationResult:
    """Apply what :func:`plan_migrations` finds, under a lock so one migrator runs at a time."""
    catalog = catalog or current_catalog()
    # Autocommit, so each conn.transaction() below is a real transaction, not a savepoint.
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('arb_schema_migration'))")
        try:
            plan = plan_migrations(conn, role, catalog)  # refuses before anything is created
            conn.execute(LEDGER_DDL)
            app_steps = [(how, m) for how, m in plan.steps if m.layer == APP]
            if app_steps:  # one transaction: a crash leaves the database empty, not half an app
                with conn.transaction():
                    for how, mig in app_steps:
                        _run(conn, mig, how)
            for how, mig in plan.steps:
                if mig.layer == PIPELINE:
                    with conn.transaction():
                        _run(conn, mig, how)
            with conn.transaction():
                synced = catalog_sync.apply(conn, role, catalog)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('arb_schema_migration'))")
    return MigrationResult(plan.to_apply, plan.to_adopt, [c.describe() for c in synced])


def _run(conn, mig: Migration, how: str) -> None:
    if how == APPLY:
        conn.execute(mig.sql)
    conn.execute(
        "INSERT INTO arb_schema_migration (version, name, sha256, how) VALUES (%s, %s, %s, %s)",
        (mig.version, mig.name, mig.sha256, "applied" if how == APPLY else "adopted"),
    )
